"""`modelyard health ADDRESS [SERVICE]`: one grpc.health.v1 Check, for container healthchecks
and scripts.

    modelyard health 127.0.0.1:50051                        # the whole server ("")
    modelyard health 127.0.0.1:50051 modelyard.v1.Predict   # one service, or a model's name

The exit code is the answer, as docker compose's healthcheck reads it:
0 SERVING; 1 the server answered but is not SERVING (NOT_SERVING, or it does not know the
service); 2 nothing answered: a malformed address, or no server within --timeout.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from modelyard_cli.options import TOOLS_PANEL, Verbose

#: gRPC target schemes passed through as they are; anything else must be HOST:PORT.
URI_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def address_problem(address: str) -> str | None:
    """Why `address` is not a target to check, or None when it is one.

    gRPC itself would take "localhost" as port 443 and a typo'd port as a host name; a
    healthcheck should say so instead of waiting for the timeout.
    """
    if address.startswith(URI_SCHEMES):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"expected HOST:PORT (or a gRPC target such as unix:/path), got {address!r}"
    return None


def health(
    address: Annotated[str, typer.Argument(help="host:port of any modelyard server")],
    service: Annotated[
        str, typer.Argument(help='Service or model name; "" is the whole server.')
    ] = "",
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds to wait for an answer.")] = 5.0,
    verbose: Verbose = False,
) -> None:
    """Check a server's grpc.health.v1 status: exit 0 SERVING, 1 not serving, 2 unreachable.

    Example:

        modelyard health 127.0.0.1:50051 modelyard.v1.Predict
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from modelyard_cli.credentials import for_address

    problem = address_problem(address)
    if problem is not None:
        _fail(2, problem)
    what = f"{address} {service!r}" if service else address
    with for_address(address).channel(address) as channel:  # TLS: MODELYARD_CA_FILE, up --tls
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # Fail-fast (no wait_for_ready): a refused connection answers at once, and the
            # deadline bounds a host that never answers.
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            code, details = error.code(), " ".join(str(error.details()).split())
            if code is grpc.StatusCode.UNAVAILABLE:
                _fail(2, f"cannot reach {address} ({details})")
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                _fail(2, f"{address}: no answer within {timeout:g} s")
            if code is grpc.StatusCode.NOT_FOUND:
                _fail(1, f"{address} does not know the service {service!r}")
            _fail(1, f"{what}: health check failed ({code.name}: {details})")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        _fail(1, f"{what}: {status}")
    typer.echo(f"{what}: {status}")


def _fail(code: int, message: str) -> NoReturn:
    # typer.echo, not rich: an address like [::1]:50051 is not markup, and a healthcheck's
    # log keeps one line per check however long the message is.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=TOOLS_PANEL)(health)
