"""`modelyard` commands for the cluster: list workers, drain/undrain.

    modelyard workers [--model bert] [--selector device=cuda]
    modelyard drain <worker-id>      /   modelyard undrain <worker-id>

The admin commands talk to a control plane at --controlplane (default: the
MODELYARD_CONTROLPLANE_ADDRESS environment variable, else the running local stack's, else
127.0.0.1:50050).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelyard_cli.options import TOOLS_PANEL, Verbose
from modelyard_cli.state import default_address

if TYPE_CHECKING:
    from modelyard.v1 import controlplane_pb2

console = Console()

ControlPlaneOption = Annotated[
    str | None,
    typer.Option(
        "--controlplane",
        help="host:port of a control plane.",
        show_default="$MODELYARD_CONTROLPLANE_ADDRESS, else the local stack's",
    ),
]


def _address(given: str | None) -> str:
    return given or default_address("controlplane")


def workers(
    controlplane: ControlPlaneOption = None,
    model: Annotated[str, typer.Option(help="Only workers serving this model.")] = "",
    selector: Annotated[
        str, typer.Option(help="Only workers whose tags match, e.g. device=cpu,zone!=eu.")
    ] = "",
    verbose: Verbose = False,
) -> None:
    """List registered workers: id, address, models, tags, health, load, draining.

    Example:

        modelyard workers --model sentiment
    """
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)

    request = pb.ListWorkersRequest(model=model, selector=selector)
    reply = _call(controlplane, lambda stub: stub.ListWorkers(request, timeout=10))
    table = Table(
        title=f"workers (answered by {reply.replica_id}{', the leader' if reply.leader else ''})"
    )
    # Ids and addresses are copied into other commands: whole, on one line. The rest is
    # one item per line and folds rather than being cut, so 80 columns lose nothing.
    # Cells are Text, not markup: "[::1]:50051" or ":memory:" are not rich's to interpret.
    for column in ("worker", "address"):
        table.add_column(column, no_wrap=True)
    for column in ("models", "tags", "state"):
        table.add_column(column, overflow="fold")
    for worker in reply.workers:
        models = Text("\n").join(
            Text(m.model) if m.serving else Text(f"{m.model} (not serving)", style="red")
            for m in worker.models
        )
        tags = "\n".join(f"{k}={_tag_value(k, v)}" for k, v in sorted(worker.tags.items()))
        table.add_row(
            Text(worker.worker_id), Text(worker.address), models, Text(tags), _state(worker)
        )
    console.print(table)


def _state(worker: controlplane_pb2.WorkerStatus) -> Text:
    state = Text("reachable", "green") if worker.reachable else Text("unreachable", "red")
    state.append(f"\n{worker.load.in_flight} in flight")
    if worker.load.queue_depth:
        state.append(f", {worker.load.queue_depth} queued")
    if worker.draining:
        state.append("\ndraining", "yellow")
    return state


def drain(
    worker_id: Annotated[str, typer.Argument(help="The worker to take out of service.")],
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Take a worker out of service without losing a request (it finishes in-flight calls).

    Example (`modelyard workers` lists the ids):

        modelyard drain generators
    """
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)

    _call(controlplane, lambda stub: stub.DrainWorker(pb.DrainWorkerRequest(worker_id=worker_id)))
    console.print(f"worker {worker_id} is draining: no new calls; in-flight calls finish")


def undrain(
    worker_id: Annotated[str, typer.Argument(help="The drained worker to bring back.")],
    controlplane: ControlPlaneOption = None,
    verbose: Verbose = False,
) -> None:
    """Bring a drained worker back into service.

    Example:

        modelyard undrain generators
    """
    from modelyard.v1 import controlplane_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)

    request = pb.UndrainWorkerRequest(worker_id=worker_id)
    _call(controlplane, lambda stub: stub.UndrainWorker(request))
    console.print(f"worker {worker_id} is serving again")


def _call(address: str | None, call: Callable[[Any], Any]) -> Any:
    from modelyard.v1 import controlplane_pb2_grpc
    from modelyard_cli.rpc import call_service

    return call_service(
        _address(address),
        controlplane_pb2_grpc.ControlPlaneStub,
        call,
        what="the control plane",
        option="--controlplane",
    )


def _tag_value(key: str, value: str) -> str:
    """Memory tags hold bytes (selectors compare them exactly); people read GiB."""
    if key.endswith("memory") and value.isdigit():
        return f"{int(value) / 2**30:.1f}GiB"
    return value


def register(app: typer.Typer) -> None:
    for command in (workers, drain, undrain):
        app.command(rich_help_panel=TOOLS_PANEL)(command)
