"""A server's refusal of the caller's credentials: its own error classes, and one line
from the command line saying what to set."""

from __future__ import annotations

import grpc
import pytest

from modelyard.errors import ModelyardError, PermissionDenied, Unauthenticated, from_status
from modelyard_cli.mistakes import mistake_of
from modelyard_cli.rpc import rpc_problem


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    ],
)
def test_a_refusal_reads_back_as_its_own_class(
    code: grpc.StatusCode, cls: type[ModelyardError]
) -> None:
    read = from_status(code, "no")
    assert type(read) is cls
    assert (read.code, read.reason) == (code, code.name)


def test_a_missing_token_says_to_set_modelyard_token() -> None:
    found = mistake_of(Unauthenticated("Run needs a serving token"))
    assert found == (
        "UNAUTHENTICATED: Run needs a serving token; set MODELYARD_TOKEN to a token it accepts",
        1,
    )


def test_a_token_without_the_role_says_an_admin_token_is_needed() -> None:
    line = rpc_problem(
        grpc.StatusCode.PERMISSION_DENIED, "lacks the admin role", "127.0.0.1:50050", "the plane"
    )
    assert line == (
        "PERMISSION_DENIED: lacks the admin role (127.0.0.1:50050); "
        "the token in MODELYARD_TOKEN lacks that role: use an admin token"
    )


def test_other_refusals_get_no_hint() -> None:
    line = rpc_problem(grpc.StatusCode.NOT_FOUND, "no graph 'x'", "127.0.0.1:50070", "it")
    assert line == "NOT_FOUND: no graph 'x' (127.0.0.1:50070)"
