"""The answer text in a registered API's JSON response, found with its response path.

The path is JMESPath (`data.items[].attributes.answer`), compiled once per path. What it
finds must be a string (the text) or a non-empty list of strings (joined with newlines, as
a projection over several items gives); anything else, or nothing, fails the call with
UNAVAILABLE quoting the start of the body, so the call goes to another replica and the
registration's failures count towards its cooldown.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jmespath
import jmespath.parser

from modelyard.errors import Unavailable

#: How much of a body an error message quotes.
QUOTED_CHARS = 100


@functools.lru_cache(maxsize=256)
def _compiled(path: str) -> jmespath.parser.ParsedResult:
    return jmespath.compile(path)


def extract_text(document: Any, path: str) -> str:
    """The text `path` finds in `document` (parsed JSON)."""
    found = _compiled(path).search(document)
    if isinstance(found, str):
        return found
    if isinstance(found, list) and found and all(isinstance(item, str) for item in found):
        return "\n".join(found)
    raise Unavailable(f"the API answered a body {path} cannot read: {_quoted(document)}")


def _quoted(document: Any) -> str:
    text = json.dumps(document, ensure_ascii=False)
    return text if len(text) <= QUOTED_CHARS else f"{text[:QUOTED_CHARS]}..."
