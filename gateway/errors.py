"""Errors as OpenAI's API gives them: an HTTP status and the body

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature",
               "code": null}}

which the official clients turn into their exception classes by status (400
BadRequestError, 404 NotFoundError, 429 RateLimitError, ...). Every modelyard status maps
to one HTTP status here, and nowhere else; an error whose cause is unknown is a 500 with a
fixed message (the traceback goes to the log, never to the client). A refusal of the
gateway's own credentials by the cluster is a 500 too: the operator's to fix, not the
client's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc

from modelyard.errors import ModelyardError
from modelyard_server.http_api.caller import API_FAILED

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "The server had an error while processing your request."

# status -> OpenAI's error `type` and, where it has one, its `code`
_BY_STATUS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),  # OpenAI's answer to a bad key
    404: ("invalid_request_error", "model_not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "upstream_error"),
    503: ("service_unavailable_error", "model_unavailable"),
    504: ("timeout_error", "timeout"),
}

_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# what a composer, control plane or worker answers when it refuses the gateway itself
_REFUSED_GATEWAY = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_REFUSED_MESSAGE = (
    "The gateway is not allowed to call this model: the cluster refused its token or "
    "certificate (the gateway's auth.token or tls settings)."
)

# Where an error that has no field path still names the field in its message, as the llm/v1
# tasks' do: "parameter 'top_p' must be ...", "input 'messages[0]' needs a role ...".
_NAMED_FIELD = re.compile(r"\b(?:parameter|input) '([A-Za-z_][\w.\[\]]*)'")


class ApiError(Exception):
    """An answer other than 200, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        kind, default_code = _BY_STATUS.get(status, _BY_STATUS[500])
        self.type = kind
        self.code = code if code is not None else default_code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _param(error: ModelyardError) -> str | None:
    field = error.field
    for prefix in ("inputs.", "parameters."):
        if field.startswith(prefix):
            return field.removeprefix(prefix)
    if field:
        return field
    named = _NAMED_FIELD.search(error.message)
    return named.group(1) if named else None


def bad_request(message: str, param: str | None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_modelyard(error: ModelyardError, *, fields: bool = True) -> ApiError:
    """The HTTP answer for a status a worker, composer or routed client returned.

    With `fields`, an INVALID_ARGUMENT that blames one of the request's fields carries it as
    `param`: a worker's field paths are its inputs and parameters, which are OpenAI's own
    fields ("parameters.temperature" is `temperature`).
    """
    if error.code in _REFUSED_GATEWAY:
        # the cluster refused the gateway's own credentials: the client's key is not at
        # fault (a 401 would make its client report a bad api_key), the operator is
        log.warning("the cluster refused the gateway's call: %s", error.code.name)
        return ApiError(500, _REFUSED_MESSAGE)
    status = _HTTP_STATUS.get(error.code, 500)
    if error.code == grpc.StatusCode.UNAVAILABLE and error.reason == API_FAILED:
        status = 502  # a registered third-party API failed: bad gateway, not no replica
    param = _param(error) if status == 400 and fields else None
    # the server edge that sent it already replaced an unexpected failure's text by a
    # fixed message, so what arrives is meant for the caller
    return ApiError(status, error.message or INTERNAL_MESSAGE, param=param)
