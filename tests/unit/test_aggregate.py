"""Aggregate methods (composer.aggregate)."""

from __future__ import annotations

from typing import Any

import pytest

from composer.aggregate import aggregate
from modelyard.errors import InvalidArgument


def refs(n: int) -> list[str]:
    return [f"n{i}.label" for i in range(n)]


def test_majority_vote_counts_labels_and_label_maps() -> None:
    values: list[Any] = ["pos", {"label": "neg", "score": 0.9}, "neg", "pos", "neg"]
    assert aggregate("majority_vote", refs(5), values) == {
        "label": "neg",
        "votes": {"pos": 2, "neg": 3},
    }


def test_majority_vote_breaks_ties_by_first_occurrence() -> None:
    assert aggregate("majority_vote", refs(4), ["b", "a", "a", "b"])["label"] == "b"


def test_majority_vote_nulls_abstain() -> None:
    assert aggregate("majority_vote", refs(3), [None, "x", None]) == {
        "label": "x",
        "votes": {"x": 1},
    }
    assert aggregate("majority_vote", refs(1), [None]) == {"label": None, "votes": {}}


def test_majority_vote_rejects_what_is_not_a_label() -> None:
    with pytest.raises(InvalidArgument, match=r"'n1.label' must be a label string .* an integer"):
        aggregate("majority_vote", refs(2), ["a", 3])


def test_weighted_average_of_numbers_and_score_maps() -> None:
    assert aggregate("weighted_average", refs(2), [1, {"score": 3.0}]) == {"value": 2.0}
    weighted = aggregate("weighted_average", refs(2), [1.0, 4.0], [3.0, 1.0])
    assert weighted == {"value": pytest.approx(1.75)}


def test_weighted_average_drops_nulls_with_their_weights() -> None:
    assert aggregate("weighted_average", refs(3), [2.0, None, 4.0], [1, 100, 1]) == {"value": 3.0}
    assert aggregate("weighted_average", refs(2), [None, None]) == {"value": None}


@pytest.mark.parametrize(
    ("values", "weights", "message"),
    [
        ([1.0, 2.0], [1.0], "1 weights for 2 values"),
        ([1.0, -1.0], [1.0, -1.0], "sum to 0"),
        ([1.0, "x"], [], "'n1.label' must be a number"),
        ([True], [], "must be a number .* a bool"),
    ],
)
def test_weighted_average_errors(values: list[Any], weights: list[float], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        aggregate("weighted_average", refs(len(values)), values, weights)


def test_concat_joins_strings_with_newlines_and_concatenates_lists() -> None:
    assert aggregate("concat", refs(3), ["a", None, "b"]) == {"value": "a\nb"}
    assert aggregate("concat", refs(2), [[1, 2], [3]]) == {"value": [1, 2, 3]}
    assert aggregate("concat", refs(1), [None]) == {"value": None}


def test_concat_rejects_mixes_and_other_kinds() -> None:
    with pytest.raises(InvalidArgument, match="not a mix"):
        aggregate("concat", refs(2), ["a", [1]])
    with pytest.raises(InvalidArgument, match="must be a string or a list, got a map"):
        aggregate("concat", refs(1), [{"a": 1}])


def test_collect_maps_references_to_values_including_nulls() -> None:
    assert aggregate("collect", ["a", "b.x"], [1, None]) == {"value": {"a": 1, "b.x": None}}


def test_unknown_method() -> None:
    with pytest.raises(InvalidArgument, match="unknown aggregate method 'median'"):
        aggregate("median", refs(1), [1])


def test_list_keeps_values_in_order_including_nulls() -> None:
    assert aggregate("list", ["a.text", "b.text", "c.text"], ["x", None, "z"]) == {
        "value": ["x", None, "z"]
    }
