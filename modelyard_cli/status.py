"""`modelyard status`: the running local stack's services and their health.

Every gRPC service is asked grpc.health.v1 Check (the whole server, ""), all at once; etcd
and the gateway (HTTP) their /health. A `--tls` stack is checked over TLS with its own CA
(and, for etcd, the CLI's certificate). Exit code: 0 every service serving, 1 any other
answer (or none), 2 no stack runs from the work folder.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from modelyard_cli.credentials import of_stack
from modelyard_cli.options import STACK_PANEL, Verbose
from modelyard_cli.stack import COMPOSER, CONTROL_PLANE, ETCD, GATEWAY, worker_service
from modelyard_cli.state import StackState, running_stack
from modelyard_cli.up import DEFAULT_WORK_DIR, WorkDir

SERVING = "SERVING"

console = Console()
errors = Console(stderr=True)


def status(
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds to wait per check.")] = 3.0,
    verbose: Verbose = False,
) -> None:
    """Show the local stack's services and their health: exit 0 all serving, 1 not, 2 none.

    Example:

        modelyard status
    """
    state = running_stack(work_dir)
    if state is None:
        errors.print(
            f"no stack is running from {work_dir}; start one with `modelyard up` "
            "(or `modelyard up --detach` to keep this shell)"
        )
        raise typer.Exit(2)
    health = check_all(state, timeout)
    console.print(
        f"stack {state.stack_file} (pid {state.pid}, started {state.started_at})",
        highlight=False,
    )
    table = Table()
    for column in ("service", "address", "health"):
        table.add_column(column, no_wrap=True)
    for service, address in services(state):
        answer = health.get(service, "starting")
        colour = "green" if answer == SERVING else "red"
        table.add_row(service, address, f"[{colour}]{answer}[/{colour}]")
    console.print(table)
    if state.tls:
        console.print(f"TLS on: CA {state.ca_file}", highlight=False, soft_wrap=True)
    serving = state.ready and all(answer == SERVING for answer in health.values())
    raise typer.Exit(0 if serving else 1)


def services(state: StackState) -> list[tuple[str, str]]:
    """(service, address) in start-up order."""
    listed = [(ETCD, state.etcd), (CONTROL_PLANE, state.control_plane)]
    listed += [(worker_service(w), address) for w, address in state.workers.items()]
    listed.append((COMPOSER, state.composer))
    return [*listed, (GATEWAY, state.gateway)] if state.gateway else listed


def check_all(state: StackState, timeout: float) -> dict[str, str]:
    """Each service's answer (SERVING, NOT_SERVING, ..., or why there was none), by name;
    services without an address yet are left out."""
    answers = {ETCD: etcd_health(state, timeout)} if state.etcd else {}
    dial = of_stack(state)
    channels = []
    pending = {}
    try:
        for service, address in services(state)[1:]:
            if not address:
                continue
            if service == GATEWAY:
                answers[service] = gateway_health(state, timeout)
                continue
            channel = dial.channel(address)
            channels.append(channel)
            stub = health_pb2_grpc.HealthStub(channel)
            pending[service] = stub.Check.future(health_pb2.HealthCheckRequest(), timeout=timeout)
        for service, call in pending.items():
            answers[service] = _answer(call)
    finally:
        for channel in channels:
            channel.close()
    return answers


def _answer(call: grpc.Future[health_pb2.HealthCheckResponse]) -> str:
    try:
        reply = call.result()
    except grpc.RpcError as error:
        code = error.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            return "unreachable"
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return "no answer"
        return code.name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _https(state: StackState, *, client_certificate: bool = False) -> ssl.SSLContext | None:
    """What a --tls stack's HTTP endpoints are read with (None: plain HTTP)."""
    if not state.tls:
        return None
    context = ssl.create_default_context(cafile=state.ca_file)
    if client_certificate:  # etcd requires one
        context.load_cert_chain(state.cert_file, state.key_file)
    return context


def _url(state: StackState, address: str, path: str) -> str:
    return f"{'https' if state.tls else 'http'}://{address}{path}"


def etcd_health(state: StackState, timeout: float) -> str:
    url, context = _url(state, state.etcd, "/health"), _https(state, client_certificate=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
            healthy = json.loads(reply.read()).get("health") == "true"
    except OSError:
        return "unreachable"
    except ValueError:
        return "unreadable /health"
    return SERVING if healthy else "NOT_SERVING"


def gateway_health(state: StackState, timeout: float) -> str:
    url, context = _url(state, state.gateway, "/health"), _https(state)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
            answer = json.loads(reply.read()).get("status")
    except urllib.error.HTTPError as error:  # 503 while it shuts down
        return "NOT_SERVING" if error.code == 503 else f"HTTP {error.code}"
    except OSError:
        return "unreachable"
    except ValueError:
        return "unreadable /health"
    return SERVING if answer == "serving" else "NOT_SERVING"


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=STACK_PANEL)(status)
