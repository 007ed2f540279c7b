"""A registration's templates filled in for one call.

- The body: each `{PLACEHOLDER}` becomes its JSON-encoded value: USER_PROMPT and MODEL_NAME
  quoted strings, MODEL_TEMPERATURE a number; a placeholder stands for a whole JSON value
  (validation refuses one inside quotes), so a prompt can never break out of its string.
- The URL: `{MODEL_NAME}` percent-encoded (the only placeholder a URL may hold).
- Headers: each `${NAME}` replaced by the calling process's environment variable NAME. A
  missing one fails the call (UNAVAILABLE: this service cannot call that registration)
  naming the variable, never a value; rendered headers are passed to the HTTP client only,
  never logged or put into an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from urllib.parse import quote

from modelyard.errors import InvalidArgument, Unavailable
from modelyard_server.http_api import placeholders


def render_body(template: str, *, prompt: str, temperature: float, model: str) -> bytes:
    """The request body for one call (UTF-8 JSON)."""
    if not math.isfinite(temperature):
        raise InvalidArgument(
            f"temperature must be a finite number, not {temperature}",
            field="parameters.temperature",
        )
    values = {
        placeholders.USER_PROMPT: json.dumps(prompt, ensure_ascii=False),
        placeholders.MODEL_TEMPERATURE: json.dumps(temperature),
        placeholders.MODEL_NAME: json.dumps(model, ensure_ascii=False),
    }
    # validation allows only known placeholders; one that slipped through stays as written
    filled = placeholders.PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), template)
    return filled.encode()


def render_url(template: str, *, model: str) -> str:
    """The URL to call for `model`."""
    return template.replace(f"{{{placeholders.MODEL_NAME}}}", quote(model, safe=""))


def render_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """`headers` with every `${NAME}` read from `environ`."""

    def secret(match: re.Match[str]) -> str:
        name = match[1]
        try:
            return environ[name]
        except KeyError:
            raise Unavailable(
                f"the environment variable {name} that a header of this registration "
                "names is not set in this service"
            ) from None

    return {
        header: placeholders.SECRET_REFERENCE.sub(secret, value)
        for header, value in headers.items()
    }
