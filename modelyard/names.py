"""What a name may be (graphs, models, workers, inputs), and how client text appears in errors.

A name is what people type and what ends up in etcd keys, metric labels and log lines, so
it is short and plain: a letter or digit first, then letters, digits, `.`, `_` or `-`, at
most `MAX_NAME_LENGTH` characters. `check_name` refuses anything else with
INVALID_ARGUMENT before a lookup, a store write or a log line sees it.

Error messages quote client input through `quote` (at most `MAX_QUOTED` characters of it)
and list known names through `some_names` (at most `MAX_LISTED` of them), so an error is
always a short line: gRPC sends the message in a trailer, and a long one breaks the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from modelyard.errors import InvalidArgument

MAX_NAME_LENGTH = 128
MAX_QUOTED = 100
MAX_LISTED = 5

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(kind: str, name: str) -> str:
    """`name` if it is a valid name for a `kind` ("graph", "model", "worker", "input"),
    else InvalidArgument saying what a name may be."""
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{kind} name {quote(name)} is too long: at most {MAX_NAME_LENGTH} characters"
        )
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{kind} name {quote(name)} is not valid: a letter or digit first, then letters, "
            "digits, '.', '_' or '-'"
        )
    return name


def quote(text: str) -> str:
    """`text` in quotes for an error message, cut to its first `MAX_QUOTED` characters."""
    if len(text) <= MAX_QUOTED:
        return repr(text)
    return f"{text[:MAX_QUOTED]!r}... ({len(text)} characters)"


def some_names(names: Iterable[str]) -> str:
    """The first few of `names` for a "these exist" hint: "a, b, c and 7 more", or "none"."""
    ordered = list(names)
    if not ordered:
        return "none"
    # names stored before this check existed may be long: cut them too
    shown = ", ".join(_cut(n) for n in ordered[:MAX_LISTED])
    rest = len(ordered) - MAX_LISTED
    return f"{shown} and {rest} more" if rest > 0 else shown


def _cut(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}..."
