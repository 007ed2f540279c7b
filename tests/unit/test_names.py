"""Names: what a graph, model, worker or input may be called, and how errors show client text."""

from __future__ import annotations

import pytest

from modelyard.errors import InvalidArgument
from modelyard.names import check_name, quote, some_names


@pytest.mark.parametrize("name", ["a", "seed-graph", "bert_2.v1", "0x", "a" * 128])
def test_plain_names_pass(name: str) -> None:
    assert check_name("graph", name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a/b", "naïve", "a\n", "😀"])
def test_other_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_name("model", name)
    assert caught.value.message == (
        f"model name {name!r} is not valid: a letter or digit first, then letters, "
        "digits, '.', '_' or '-'"
    )


def test_a_long_name_is_refused_and_quoted_short() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_name("graph", "g" * 1_000_000)
    assert caught.value.message == (
        f"graph name {'g' * 100!r}... (1000000 characters) is too long: at most 128 characters"
    )


def test_quote_keeps_short_text_whole() -> None:
    assert quote("it's") == '"it\'s"'
    assert quote("x" * 100) == repr("x" * 100)


def test_some_names_lists_the_first_few() -> None:
    assert some_names([]) == "none"
    assert some_names(["b", "a"]) == "b, a"
    assert some_names(f"g{i:02}" for i in range(12)) == "g00, g01, g02, g03, g04 and 7 more"


def test_some_names_cuts_a_long_stored_name() -> None:
    assert some_names(["n" * 20_000]) == "n" * 100 + "..."
