"""modelyard's statuses as OpenAI's HTTP errors: one status each, and the field a worker's
INVALID_ARGUMENT names as `param`."""

from __future__ import annotations

import pytest

from gateway.errors import INTERNAL_MESSAGE, from_modelyard
from modelyard.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModelError,
    ModelyardError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (NotFound("no model 'x'"), 404, "invalid_request_error", "model_not_found"),
        (ResourceExhausted("queue limit"), 429, "rate_limit_error", "rate_limit_exceeded"),
        (Unavailable("no endpoints"), 503, "service_unavailable_error", "model_unavailable"),
        (Unavailable("HTTP 500", reason="API_FAILED"), 502, "server_error", "upstream_error"),
        (DeadlineExceeded("deadline"), 504, "timeout_error", "timeout"),
        (ModelError("the model failed"), 500, "server_error", None),
    ],
)
def test_each_status_has_one_http_status(
    error: ModelyardError, status: int, kind: str, code: str | None
) -> None:
    answer = from_modelyard(error)
    assert (answer.status, answer.type, answer.code) == (status, kind, code)
    assert answer.body() == {
        "error": {"message": error.message, "type": kind, "param": None, "code": code}
    }


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("parameter 'top_p' must be above 0 and at most 1, got 1.5", "top_p"),
        ("input 'messages[2]' needs a role: a non-empty string such as 'user'", "messages[2]"),
        ("input 'input' must be a string or a list of 1 to 2048 strings", "input"),
        ("the model's chat template refused the messages: no", None),
    ],
)
def test_a_workers_invalid_argument_names_its_field(message: str, param: str | None) -> None:
    answer = from_modelyard(InvalidArgument(message))
    assert (answer.status, answer.param, answer.message) == (400, param, message)


@pytest.mark.parametrize(
    ("field", "param"),
    [("parameters.temperature", "temperature"), ("inputs.messages[1].role", "messages[1].role")],
)
def test_a_field_path_is_the_param(field: str, param: str) -> None:
    answer = from_modelyard(InvalidArgument("parameter 'x' is wrong", field=field))
    assert answer.param == param


def test_fields_are_not_read_from_a_graphs_messages() -> None:
    # a graph's inputs are not the request's fields
    assert from_modelyard(InvalidArgument("input 'prompt' is missing"), fields=False).param is None


def test_an_empty_internal_message_becomes_the_fixed_one() -> None:
    assert from_modelyard(ModelyardError("")).message == INTERNAL_MESSAGE
