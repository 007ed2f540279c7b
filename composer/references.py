"""References: the strings a graph uses to name values.

inputs.prompt        a graph input
gen                  node `gen`'s whole outputs map
gen.text             one field of it
cls.scores.0         deeper: map keys and list indexes, dot-separated
item                 the current element inside a map node (item.text: a field of it)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.errors import InvalidArgument

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True, slots=True)
class Ref:
    kind: Literal["input", "node", "item"]
    name: str  # the input's or node's name; "" for item
    path: tuple[str, ...] = ()  # fields and list indexes below it

    def __str__(self) -> str:
        head = {"input": f"inputs.{self.name}", "node": self.name, "item": "item"}[self.kind]
        return ".".join((head, *self.path))


def parse_ref(text: str) -> Ref:
    """Parses a reference; raises InvalidArgument saying what is wrong with it."""
    parts = text.split(".")
    if not text or any(not _SEGMENT.match(p) for p in parts):
        raise InvalidArgument(
            f"reference {text!r} is malformed: use inputs.<name>, <node>, <node>.<field> or item"
        )
    if parts[0] == "inputs":
        if len(parts) < 2:
            raise InvalidArgument(f"reference {text!r} names no input: use inputs.<name>")
        return Ref("input", parts[1], tuple(parts[2:]))
    if parts[0] == "item":
        return Ref("item", "", tuple(parts[1:]))
    return Ref("node", parts[0], tuple(parts[1:]))


class Missing(Exception):
    """A referenced field does not exist in the value it points into."""


def resolve(
    ref: Ref,
    inputs: Mapping[str, Any],
    nodes: Mapping[str, Any],
    item: Any = None,
) -> Any:
    """The value a reference names, given the run's inputs, node outputs and map item."""
    if ref.kind == "input":
        value = inputs[ref.name]
    elif ref.kind == "node":
        value = nodes[ref.name]
    else:
        value = item
    for step in ref.path:
        value = _step(value, step, ref)
    return value


def _step(value: Any, step: str, ref: Ref) -> Any:
    if isinstance(value, Mapping):
        if step not in value:
            known = ", ".join(sorted(value)) or "none"
            raise Missing(f"{ref}: no field '{step}' (fields: {known})")
        return value[step]
    if isinstance(value, list | tuple) and step.lstrip("-").isdigit():
        index = int(step)
        if not -len(value) <= index < len(value):
            raise Missing(f"{ref}: index {index} is out of range for a list of {len(value)}")
        return value[index]
    raise Missing(f"{ref}: cannot take '{step}' of {type(value).__name__}")
