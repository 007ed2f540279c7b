"""`modelyard` commands for the cluster: run a control plane, list workers, drain/undrain.

    modelyard controlplane --etcd 127.0.0.1:2379 --port 50050
    modelyard workers [--model bert] [--selector device=cuda]
    modelyard drain <worker-id>      /   modelyard undrain <worker-id>

The admin commands talk to a control plane at --controlplane (default: the
MODELYARD_CONTROLPLANE_ADDRESS environment variable, else the running local stack's, else
127.0.0.1:50050).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelyard_cli.state import default_address

console = Console()
errors = Console(stderr=True)

ControlPlaneOption = Annotated[
    str | None, typer.Option("--controlplane", help="host:port of a control plane.")
]


def _address(given: str | None) -> str:
    return given or default_address("controlplane")


def controlplane(
    config: Annotated[Path | None, typer.Option(help="Control-plane config (YAML).")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port; 0 picks a free one.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    etcd: Annotated[
        list[str] | None, typer.Option(help="etcd endpoint host:port (repeat for several).")
    ] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here.")] = None,
) -> None:
    """Run a control-plane replica (several may run; one leads, elected in etcd)."""
    from controlplane.server import run
    from controlplane.settings import ControlPlaneSettings
    from modelyard_cli.main import setup_logging
    from modelyard_server.settings_file import SETTINGS_ERRORS, build_settings

    setup_logging(False)
    overrides = {"port": port, "host": host, "port_file": port_file}
    try:
        settings = build_settings(ControlPlaneSettings, config, overrides, etcd)
    except SETTINGS_ERRORS as error:
        errors.print(f"[red]invalid control-plane settings:[/red] {error}")
        raise typer.Exit(2) from None
    raise typer.Exit(asyncio.run(run(settings)))


def workers(
    controlplane: ControlPlaneOption = None,
    model: Annotated[str, typer.Option(help="Only workers serving this model.")] = "",
    selector: Annotated[str, typer.Option(help="Only workers whose tags match.")] = "",
) -> None:
    """List registered workers: id, address, models, tags, health, load, draining."""
    from modelyard.v1 import controlplane_pb2 as pb

    request = pb.ListWorkersRequest(model=model, selector=selector)
    reply = _call(controlplane, lambda stub: stub.ListWorkers(request, timeout=10))
    table = Table(
        title=f"workers (answered by {reply.replica_id}{', the leader' if reply.leader else ''})"
    )
    for column in ("worker", "address", "models", "tags", "health", "in flight", "draining"):
        table.add_column(column)
    for worker in reply.workers:
        models = ", ".join(
            m.name if m.serving else f"[red]{m.name} (not serving)[/red]" for m in worker.models
        )
        tags = " ".join(f"{k}={v}" for k, v in sorted(worker.tags.items()))
        health = "[green]reachable[/green]" if worker.reachable else "[red]unreachable[/red]"
        table.add_row(
            worker.worker_id,
            worker.address,
            models,
            tags,
            health,
            f"{worker.load.in_flight} (+{worker.load.queue_depth} queued)",
            "[yellow]yes[/yellow]" if worker.draining else "no",
        )
    console.print(table)


def drain(
    worker_id: Annotated[str, typer.Argument(help="The worker to take out of service.")],
    controlplane: ControlPlaneOption = None,
) -> None:
    """Take a worker out of service without losing a request (it finishes in-flight calls)."""
    from modelyard.v1 import controlplane_pb2 as pb

    _call(controlplane, lambda stub: stub.DrainWorker(pb.DrainWorkerRequest(worker_id=worker_id)))
    console.print(f"worker {worker_id} is draining: no new calls; in-flight calls finish")


def undrain(
    worker_id: Annotated[str, typer.Argument(help="The drained worker to bring back.")],
    controlplane: ControlPlaneOption = None,
) -> None:
    """Bring a drained worker back into service."""
    from modelyard.v1 import controlplane_pb2 as pb

    request = pb.UndrainWorkerRequest(worker_id=worker_id)
    _call(controlplane, lambda stub: stub.UndrainWorker(request))
    console.print(f"worker {worker_id} is serving again")


def _call(address: str | None, call: Callable[[Any], Any]) -> Any:
    from modelyard.v1 import controlplane_pb2_grpc
    from modelyard_cli.rpc import call_service

    return call_service(_address(address), controlplane_pb2_grpc.ControlPlaneStub, call)


def register(app: typer.Typer) -> None:
    for command in (controlplane, workers, drain, undrain):
        app.command()(command)
