"""What a registration of a third-party API must be, checked before it is stored.

`check_registration` raises InvalidArgument naming the first wrong field of the
RegisterModelRequest (`model`, `owner`, `http_api.url_template`, `http_api.headers.<name>`,
...) and saying what was expected; messages quote at most `MAX_QUOTED` characters of what
the client sent. The address checks that need DNS (the SSRF guard) are the caller's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

import jmespath
import jmespath.exceptions

from modelyard.endpoints import HttpApi
from modelyard.errors import InvalidArgument
from modelyard.names import check_name, quote
from modelyard_server.http_api import placeholders
from modelyard_server.http_api.header_secrets import carries_credentials, is_reference_only
from modelyard_server.http_api.render import render_url

MAX_URL = 8 * 1024
MAX_BODY = 64 * 1024
MAX_RESPONSE_PATH = 4 * 1024
MAX_OWNER = 256
MAX_HEADERS = 32
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8 * 1024
MAX_TIMEOUT_S = 300.0
SCHEMES = ("http", "https")

#: What each placeholder stands for while a body is checked to be JSON: values of the
#: types rendering puts there (placeholders.py: a quoted string, a number).
SAMPLES = {
    placeholders.USER_PROMPT: json.dumps("a prompt"),
    placeholders.MODEL_TEMPERATURE: json.dumps(0.5),
    placeholders.MODEL_NAME: json.dumps("a-model"),
}
#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What no header value may hold: line breaks would start another header.
#: Headers the HTTP client sets itself: a registration setting them could smuggle a second
#: request (Content-Length, Transfer-Encoding) or aim the call at another virtual host.
_CLIENT_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade"}
)
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

API = "http_api"


def check_registration(model: str, owner: str, api: HttpApi) -> None:
    """Returns when `model`, `owner` and `api` may be stored; else InvalidArgument."""
    try:
        check_name("model", model)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, field="model") from None
    _at_most(owner, MAX_OWNER, "owner", "the owner")
    if not owner.isprintable():  # it is shown in tables, logs and as a tag
        raise InvalidArgument("the owner holds a line break or control character", field="owner")
    check_url_template(api.url_template, model)
    _check_body(api.body_template)
    _check_response_path(api.response_path)
    _check_headers(api.headers)
    if not (math.isfinite(api.timeout_s) and 0 < api.timeout_s <= MAX_TIMEOUT_S):
        raise InvalidArgument(
            f"the timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} s, "
            f"not {api.timeout_s:g} s",
            field=f"{API}.timeout",
        )
    if api.health_url:
        check_url(api.health_url, f"{API}.health_url", "the health URL")


def check_url_template(template: str, model: str) -> SplitResult:
    """The URL `template` stands for when serving `model` (placeholders filled in), or
    InvalidArgument."""
    field = f"{API}.url_template"
    if not template:
        raise InvalidArgument("a URL is required (url_template)", field=field)
    _at_most(template, MAX_URL, field, "the URL template")
    found = placeholders.placeholders_in(template)
    misplaced = sorted(found - placeholders.IN_URL)
    if misplaced:
        allowed = ", ".join(f"{{{p}}}" for p in sorted(placeholders.IN_URL))
        raise InvalidArgument(
            f"the URL template may hold only {allowed}, not {{{misplaced[0]}}}", field=field
        )
    return check_url(render_url(template, model=model), field, "the URL")


def check_url(url: str, field: str, what: str) -> SplitResult:
    """`url` split, if it is an http or https URL with a host; else InvalidArgument."""
    _at_most(url, MAX_URL, field, what)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port out of range or not a number
    except ValueError:
        raise InvalidArgument(f"{what} {quote(url)} is not a valid URL", field=field) from None
    if parts.scheme not in SCHEMES:
        raise InvalidArgument(
            f"{what} {quote(url)} must start with http:// or https://", field=field
        )
    if not parts.hostname:
        raise InvalidArgument(f"{what} {quote(url)} names no host", field=field)
    if parts.username is not None or parts.password is not None:
        # a password in the URL would be stored in etcd and shown in every listing
        raise InvalidArgument(
            f"{what} must not hold a user name or password: give credentials in a header "
            "as a ${NAME} reference",
            field=field,
        )
    return parts


def host_port(parts: SplitResult) -> str:
    """The host:port an http(s) URL connects to (the scheme's port when it names none)."""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_body(template: str) -> None:
    field = f"{API}.body_template"
    _at_most(template, MAX_BODY, field, "the body template")
    found = placeholders.placeholders_in(template)
    unknown = sorted(found - placeholders.KNOWN)
    if unknown:
        known = ", ".join(f"{{{p}}}" for p in sorted(placeholders.KNOWN))
        raise InvalidArgument(
            f"the body template holds an unknown placeholder {{{unknown[0]}}}; known: {known}",
            field=field,
        )
    if placeholders.USER_PROMPT not in found:
        raise InvalidArgument(
            f"the body template must hold {{{placeholders.USER_PROMPT}}} (where the prompt goes)",
            field=field,
        )
    sample = placeholders.PLACEHOLDER.sub(lambda m: SAMPLES[m.group(1)], template)
    try:
        json.loads(sample)
    except ValueError as error:
        raise InvalidArgument(
            f"the body template is not JSON once its placeholders are filled in "
            f"({error}); a placeholder stands for a whole JSON value: "
            f'"prompt": {{{placeholders.USER_PROMPT}}}, without quotes around it',
            field=field,
        ) from None


def _check_response_path(path: str) -> None:
    field = f"{API}.response_path"
    if not path:
        raise InvalidArgument(
            "a response path is required: the JMESPath expression that finds the answer "
            "in the API's JSON reply, e.g. choices[0].message.content",
            field=field,
        )
    _at_most(path, MAX_RESPONSE_PATH, field, "the response path")
    try:
        jmespath.compile(path)
    except jmespath.exceptions.JMESPathError as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidArgument(
            f"the response path {quote(path)} is not a JMESPath expression ({problem})",
            field=field,
        ) from None


def _check_headers(headers: Mapping[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument(
            f"at most {MAX_HEADERS} headers, not {len(headers)}", field=f"{API}.headers"
        )
    for name, value in headers.items():
        if len(name) > MAX_HEADER_NAME or not _HEADER_NAME.fullmatch(name):
            raise InvalidArgument(
                f"{quote(name)} is not a header name: letters, digits and !#$%&'*+-.^_`|~, "
                f"at most {MAX_HEADER_NAME} characters",
                field=f"{API}.headers",
            )
        field = f"{API}.headers.{name}"
        if name.lower() in _CLIENT_HEADERS:
            raise InvalidArgument(
                f"header {name} is set by modelyard's HTTP client and may not be registered",
                field=field,
            )
        _at_most(value, MAX_HEADER_VALUE, field, f"header {name}")
        if _HEADER_VALUE_FORBIDDEN.search(value) or not value.isascii():
            raise InvalidArgument(
                f"header {name} may hold only printable ASCII (no line breaks)", field=field
            )
        if carries_credentials(name) and not is_reference_only(value):
            # the value itself is never quoted: it may be the very secret
            raise InvalidArgument(
                f"header {name} carries credentials, so its value must name the secret as "
                "a ${NAME} reference (e.g. 'Bearer ${OPENAI_API_KEY}'), read from the "
                "calling service's environment; a secret given literally would be stored "
                "in etcd",
                field=field,
            )


def _at_most(text: str, limit: int, field: str, what: str) -> None:
    if len(text) > limit:
        raise InvalidArgument(
            f"{what} is too long: {len(text)} characters, at most {limit}", field=field
        )
