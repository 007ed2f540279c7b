"""Aggregate nodes: combining several values into one result.

    majority_vote     labels (strings, or maps with a "label")  -> {"label", "votes"}
    weighted_average  numbers (or maps with a "score")          -> {"value"}
    concat            strings (joined with "\\n") or lists       -> {"value"}
    collect           anything                                  -> {"value": {ref: value}}
    list              anything                                  -> {"value": [values, in order]}

A null value (an optional node that was skipped, a switch that matched nothing) abstains:
it casts no vote, adds no weight and no text, so an ensemble with optional members still
answers when some of them fail. With nothing left to combine, the result is null
(majority_vote: label null, no votes). `collect` and `list` keep nulls: they report what
each gave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelyard.errors import InvalidArgument

METHODS = ("majority_vote", "weighted_average", "concat", "collect", "list")


def aggregate(
    method: str, refs: Sequence[str], values: Sequence[Any], weights: Sequence[float] = ()
) -> dict[str, Any]:
    """Combines `values` (those `refs` name, in order) by `method`."""
    if method == "collect":
        return {"value": dict(zip(refs, values, strict=True))}
    if method == "list":  # e.g. texts from parallel generators, for a map to score each
        return {"value": list(values)}
    present = [(ref, value) for ref, value in zip(refs, values, strict=True) if value is not None]
    if method == "majority_vote":
        return _majority_vote(present)
    if method == "weighted_average":
        return {"value": _weighted_average(refs, values, weights)}
    if method == "concat":
        return {"value": _concat(present)}
    raise InvalidArgument(f"unknown aggregate method {method!r}; use one of {', '.join(METHODS)}")


def _majority_vote(present: list[tuple[str, Any]]) -> dict[str, Any]:
    votes: dict[str, int] = {}  # insertion-ordered, so max() breaks ties by first occurrence
    for ref, value in present:
        label = value.get("label") if isinstance(value, Mapping) else value
        if not isinstance(label, str):
            raise InvalidArgument(
                f"majority_vote: '{ref}' must be a label string or a map with a string "
                f"'label', got {_name(value)}"
            )
        votes[label] = votes.get(label, 0) + 1
    winner = max(votes, key=votes.__getitem__) if votes else None
    return {"label": winner, "votes": votes}


def _weighted_average(
    refs: Sequence[str], values: Sequence[Any], weights: Sequence[float]
) -> float | None:
    if weights and len(weights) != len(refs):
        raise InvalidArgument(
            f"weighted_average: {len(weights)} weights for {len(refs)} values; "
            "give one weight per value, or none for equal weights"
        )
    total = weight_sum = 0.0
    for ref, value, weight in zip(refs, values, weights or [1.0] * len(refs), strict=True):
        if value is None:
            continue
        number = value.get("score") if isinstance(value, Mapping) else value
        if not isinstance(number, int | float) or isinstance(number, bool):
            raise InvalidArgument(
                f"weighted_average: '{ref}' must be a number or a map with a numeric "
                f"'score', got {_name(value)}"
            )
        total += weight * number
        weight_sum += weight
    if all(value is None for value in values):
        return None
    if not weight_sum:
        raise InvalidArgument("weighted_average: the weights of the values given sum to 0")
    return total / weight_sum


def _concat(present: list[tuple[str, Any]]) -> Any:
    if not present:
        return None
    first_ref, first = present[0]
    if isinstance(first, str):
        kind: type = str
    elif isinstance(first, list):
        kind = list
    else:
        raise InvalidArgument(
            f"concat: '{first_ref}' must be a string or a list, got {_name(first)}"
        )
    for ref, value in present:
        if not isinstance(value, kind):
            raise InvalidArgument(
                f"concat: '{ref}' is {_name(value)}, but '{first_ref}' is {_name(first)}; "
                "concat joins strings or lists, not a mix"
            )
    if kind is str:
        # one value per line: model outputs (sentences, summaries) stay apart and readable
        return "\n".join(value for _, value in present)
    return [element for _, value in present for element in value]


def _name(value: Any) -> str:
    names = {bool: "a bool", int: "an integer", float: "a float", str: "a string", list: "a list"}
    if isinstance(value, Mapping):
        return "a map"
    return names.get(type(value), "null" if value is None else type(value).__name__)
