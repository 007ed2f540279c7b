"""Device-tag selectors: which workers a call, a graph node or a watch may use.

    device=cuda,gpu_memory>=16GiB,zone!=eu-1,gpu_name,!preemptible

Terms are joined by commas and must all hold. A term is `tag OP value`, `tag` (the tag is
present) or `!tag` (it is absent). Operators:

- `=`, `!=` compare strings exactly. Like Kubernetes label selectors, `!=` also matches a
  worker that lacks the tag: "not in eu-1" includes workers that name no zone.
- `>`, `>=`, `<`, `<=` compare numbers. Both sides may be plain numbers (`4`, `1.5`, `1e9`)
  or sizes: B, KB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers of 1024), any case.
  A tag that is absent or not a number does not match; only the selector side must parse.

Tag names are letters, digits, `_`, `.`, `-` and `/`. Values may hold inner spaces (GPU
names do) but no commas and no operator characters. Parsing is strict: a malformed
selector fails with `InvalidArgument` naming the term and the problem, because a typo that
silently matched everything (or nothing) would route calls to the wrong hardware.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from modelyard.errors import InvalidArgument

_OPERATORS = "=, !=, >, >=, <, <="
_NUMERIC = frozenset({">", ">=", "<", "<="})
_OPERATOR_CHARS = frozenset("=!<>")
_TAG = re.compile(r"[A-Za-z0-9_.\-/]+")
_TERM = re.compile(r"\s*(?P<tag>!?[^=!<>]*?)\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*")
_NUMBER = re.compile(r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[A-Za-z]*)")
_UNITS = {
    "": 1,
    "b": 1,
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
}
_HINT = "e.g. 4, 1.5 or 16GiB"
_COMPARE = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}


def parse_quantity(text: str) -> float | None:
    """A plain number or a size with a unit, in base units; None if `text` is neither."""
    match = _NUMBER.fullmatch(text.strip())
    if match is None:
        return None
    scale = _UNITS.get(match["unit"].lower())
    return None if scale is None else float(match["number"]) * scale


@dataclass(frozen=True, slots=True)
class Term:
    """One condition on one tag. `op` is "present", "absent" or a comparison operator."""

    tag: str
    op: str
    value: str = ""
    number: float | None = None  # the parsed value, for numeric operators

    def matches(self, tags: Mapping[str, str]) -> bool:
        actual = tags.get(self.tag)
        if self.op == "present":
            return actual is not None
        if self.op == "absent":
            return actual is None
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        have = None if actual is None else parse_quantity(actual)
        if have is None or self.number is None:
            return False
        return _COMPARE[self.op](have, self.number)

    def __str__(self) -> str:
        if self.op == "present":
            return self.tag
        if self.op == "absent":
            return f"!{self.tag}"
        return f"{self.tag}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: all of `terms` must hold. No terms matches every worker.

    Terms are kept sorted and deduplicated, so equal selectors compare, hash and print
    equal however they were written (callers key subscriptions by them).
    """

    terms: tuple[Term, ...] = ()

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(term.matches(tags) for term in self.terms)

    def __str__(self) -> str:
        return ",".join(str(term) for term in self.terms)


def parse_selector(text: str) -> Selector:
    """Parses `text`; the empty (or blank) string selects everything."""
    if not text.strip():
        return Selector()
    terms = {_parse_term(raw.strip(), text) for raw in text.split(",")}
    return Selector(tuple(sorted(terms, key=lambda t: (t.tag, t.op, t.value))))


def _parse_term(raw: str, whole: str) -> Term:
    if not raw:
        raise InvalidArgument(f"selector {whole!r} has an empty term (a stray comma?)")
    match = _TERM.fullmatch(raw)
    if match is None:  # no operator: a presence or absence test
        absent = raw.startswith("!")
        tag = raw[1:].strip() if absent else raw
        _check_tag(raw, tag, "!" if absent else "")
        return Term(tag, "absent" if absent else "present")
    tag, op, value = match["tag"], match["op"], match["value"]
    if tag.startswith("!"):
        raise InvalidArgument(
            f"selector term {raw!r} mixes '!' with {op!r}: '!tag' takes a tag name alone"
        )
    _check_tag(raw, tag, op)
    if not value:
        raise InvalidArgument(f"selector term {raw!r} needs a value after {op!r}")
    if _OPERATOR_CHARS & set(value):
        raise InvalidArgument(
            f"selector term {raw!r} has more than one operator (operators are {_OPERATORS})"
        )
    if op not in _NUMERIC:
        return Term(tag, op, value)
    number = parse_quantity(value)
    if number is None:
        raise InvalidArgument(
            f"selector term {raw!r} needs a number or size after {op!r} ({_HINT})"
        )
    return Term(tag, op, value, number)


def _check_tag(raw: str, tag: str, op: str) -> None:
    if not tag:
        where = "after '!'" if op == "!" else f"before {op!r}"
        raise InvalidArgument(f"selector term {raw!r} needs a tag name {where}")
    if not _TAG.fullmatch(tag):
        raise InvalidArgument(
            f"selector term {raw!r} has an invalid tag name {tag!r} (letters, digits, "
            f"'_', '.', '-' and '/'; operators are {_OPERATORS})"
        )
