"""API keys: with keys configured, every request but /health must carry one as
`Authorization: Bearer <key>` (what the official OpenAI clients send as `api_key`).

A request without a key, or with a key nobody configured, gets 401 with OpenAI's own error
body (type `invalid_request_error`, code `invalid_api_key`), which the clients raise as
AuthenticationError. Only the keys' SHA-256 digests are kept; a presented key is digested
and compared with every one in constant time, so neither the time nor an answer nor a log
line says anything about a key. /health stays open: orchestrators probe it without keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ApiError
from gateway.translate import dumps

#: routes anyone may call
OPEN_PATHS = frozenset({"/health"})

_MISSING = (
    "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
    "(Authorization: Bearer YOUR_KEY)."
)
_WRONG = "Incorrect API key provided."


class ApiKeys:
    """The configured keys, as digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key.encode()) for key in keys if key]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def accepts(self, key: bytes) -> bool:
        presented = _digest(key)
        found = False
        for digest in self._digests:  # every one, never stopping at a match
            found |= hmac.compare_digest(presented, digest)
        return found


class RequireApiKey:
    """ASGI middleware: refuses (401) any HTTP request off `OPEN_PATHS` without a known key.

    Plain ASGI rather than an HTTP middleware of Starlette's: it leaves the request's
    receive channel, which streams and disconnect detection read, untouched.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = _bearer(scope["headers"])
        if key is not None and self.keys.accepts(key):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, _MISSING if key is None else _WRONG, code="invalid_api_key")
        response = Response(
            dumps(error.body()),
            status_code=401,
            media_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.partition(b" ")
            if scheme.lower() == b"bearer" and key.strip():
                return key.strip()
    return None


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()
