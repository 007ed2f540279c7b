"""One blocking gRPC call from a command: on failure one line (the status and message, or
that nothing answers at the address) and exit code 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from modelyard_cli.credentials import for_address
from modelyard_cli.mistakes import fail, refusal_hint


def call_service(
    target: str,
    stub_class: Callable[[grpc.Channel], Any],
    call: Callable[[Any], Any],
    *,
    what: str = "the server",
    option: str = "",
) -> Any:
    """`call(stub)` on a channel to `target` (TLS and token from the environment or the local
    stack: `modelyard_cli.credentials`). `what` names the server in messages, `option`
    the command's flag that points at another one."""
    with for_address(target).channel(target) as channel:
        try:
            return call(stub_class(channel))
        except grpc.RpcError as error:
            details = error.details() or ""
            fail(rpc_problem(error.code(), details, target, what, option), code=1)


def rpc_problem(
    code: grpc.StatusCode, details: str, target: str, what: str, option: str = ""
) -> str:
    """ "NOT_FOUND: graph 'x' is not deployed (127.0.0.1:50070)", or, when nothing answers at
    `target`, "cannot reach the composer at 127.0.0.1:50070 (Connection refused): ..."."""
    reason = unreachable(code, details)
    if reason is None:
        return refusal_hint(code.name, f"{code.name}: {details} ({target})")
    elsewhere = f", or point {option} at a running one" if option else ""
    return (
        f"cannot reach {what} at {target} ({reason}): is the stack up (`modelyard up`){elsewhere}?"
    )


def unreachable(code: grpc.StatusCode, details: str) -> str | None:
    """Why nothing answered, when an error says so ("Connection refused"); else None."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    if "failed to connect to all addresses" not in details and "DNS" not in details:
        return None
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to
    # connect to remote host: Connection refused": the last part is the one a person needs
    return details.rsplit(": ", 1)[-1].strip(" []")
