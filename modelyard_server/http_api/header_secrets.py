"""Which headers carry credentials, and what of a header value may be shown or stored.

A credential header's value is stored only as a `${NAME}` reference (optionally after an
auth scheme word: `Bearer ${OPENAI_KEY}`); the calling service reads NAME from its own
environment at call time, so no secret reaches etcd, an endpoint set or a listing.
"""

from __future__ import annotations

import re

from modelyard_server.http_api.placeholders import SECRET_REFERENCE

#: Header names that carry credentials whatever their spelling; any name holding one of
#: `_CREDENTIAL_WORDS` does too ("X-Api-Key", "X-Auth-Token", "Client-Secret").
_CREDENTIAL_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
_CREDENTIAL_WORDS = ("key", "token", "secret", "password", "auth")

#: The only shape a credential value may have: an optional scheme word, then one reference.
_REFERENCE_ONLY = re.compile(
    r"(?:[A-Za-z]{1,20} +)?" + SECRET_REFERENCE.pattern,
)

REDACTED = "<redacted>"


def carries_credentials(name: str) -> bool:
    """Whether a header named `name` is taken to carry a secret (case-insensitive)."""
    lowered = name.lower()
    return lowered in _CREDENTIAL_NAMES or any(word in lowered for word in _CREDENTIAL_WORDS)


def is_reference_only(value: str) -> bool:
    """Whether `value` names its secret by reference and holds none itself."""
    return _REFERENCE_ONLY.fullmatch(value) is not None


def shown(value: str) -> str:
    """`value` as a listing shows it: a reference as is, anything else `REDACTED` (a
    header that is not recognised as a credential may still hold one)."""
    return value if is_reference_only(value) else REDACTED
