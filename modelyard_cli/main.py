"""The `modelyard` command line.

modelyard worker --config worker.yaml --port 50051     serve the models of a config
modelyard worker --config worker.yaml --describe       print its models and device tags
modelyard models localhost:50051                       list a worker's models
modelyard metadata localhost:50051 sentiment           describe one model
modelyard predict localhost:50051 sentiment --input text="I love it"
modelyard predict localhost:50051 gpt2 --input text="Hello" --stream
modelyard demo                                         the README's main job
modelyard controlplane --etcd 127.0.0.1:2379           run a control-plane replica
modelyard workers [--model M]                          list registered workers
modelyard drain <worker-id>                            (and undrain) take one out of service
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from workers.settings import WorkerSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
errors = Console(stderr=True)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def worker(
    config: Annotated[Path | None, typer.Option(help="Worker config (YAML).")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port; 0 picks a free one.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here.")] = None,
    strict: Annotated[bool | None, typer.Option(help="Refuse to start if a model fails.")] = None,
    etcd: Annotated[
        list[str] | None,
        typer.Option(help="Register in etcd at host:port (repeat for several members)."),
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="This worker's id in etcd.")] = None,
    describe: Annotated[bool, typer.Option(help="Print models and tags, then exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the models of a worker config over gRPC (modelyard.v1.Predict)."""
    from modelyard_server.settings_file import SETTINGS_ERRORS
    from workers.settings import load_settings

    setup_logging(verbose)
    overrides = {
        "port": port,
        "host": host,
        "port_file": port_file,
        "strict": strict,
        "worker_id": worker_id,
    }
    try:
        settings = load_settings(config, overrides, etcd)
    except SETTINGS_ERRORS as error:
        errors.print(f"[red]invalid worker config:[/red] {error}")
        raise typer.Exit(2) from None
    if describe:
        _describe_worker(settings)
        return
    from workers.server import run

    raise typer.Exit(asyncio.run(run(settings)))


def _describe_worker(settings: WorkerSettings) -> None:
    from workers.devices import resolve_device, worker_tags

    table = Table(title="models")
    for column in ("name", "source", "task", "device", "batching", "threads"):
        table.add_column(column)
    for model in settings.models:
        try:
            device = resolve_device(model.device)
        except RuntimeError as error:
            device = f"[red]{error}[/red]"
        batching = model.batching
        table.add_row(
            model.name,
            model.source or model.class_path,
            model.task or "(inferred)",
            device,
            f"max {batching.max_batch_size}, wait {batching.max_wait_ms} ms",
            str(model.threads),
        )
    console.print(table)
    tags = Table(title="device tags")
    tags.add_column("tag")
    tags.add_column("value")
    for key, value in worker_tags((m.device for m in settings.models), settings.tags).items():
        tags.add_row(key, value)
    console.print(tags)


@app.command()
def models(address: Annotated[str, typer.Argument(help="host:port of a worker")]) -> None:
    """List a worker's models and their state."""
    from modelyard.client import Client
    from modelyard.v1 import predict_pb2 as pb

    with _ErrorsAsExit(), Client(address, timeout=10) as client:
        statuses = client.list_models()
    table = Table()
    for column in ("name", "task", "version", "state", "reason"):
        table.add_column(column)
    for status in statuses:
        state = pb.ModelState.Name(status.state).removeprefix("MODEL_STATE_").lower()
        table.add_row(status.name, status.task, status.version, state, status.state_reason)
    console.print(table)


@app.command()
def metadata(
    address: Annotated[str, typer.Argument(help="host:port of a worker")],
    model: Annotated[str, typer.Argument(help="model name")],
) -> None:
    """Describe one model: task, signature, defaults, device, version, state (as JSON)."""
    from google.protobuf.json_format import MessageToDict

    from modelyard.client import Client

    with _ErrorsAsExit(), Client(address, timeout=10) as client:
        response = client.metadata(model)
    console.print_json(json.dumps(MessageToDict(response, preserving_proto_field_name=True)))


@app.command()
def predict(
    address: Annotated[str, typer.Argument(help="host:port of a worker")],
    model: Annotated[str, typer.Argument(help="model name")],
    input: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="name=value (JSON or text)")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="name=value (JSON or text)")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Use PredictStream and print chunks.")] = False,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 60.0,
) -> None:
    """Call one model and print its outputs."""
    from modelyard.client import Client
    from modelyard.values import jsonable

    inputs, parameters = _pairs(input or []), _pairs(param or [])
    with _ErrorsAsExit(), Client(address, timeout=timeout) as client:
        if not stream:
            result = client.predict(model, inputs, parameters=parameters)
            console.print_json(json.dumps(result.outputs, default=jsonable))
            return
        for event in client.predict_stream(model, inputs, parameters=parameters):
            if event.final:
                console.print()
                console.print_json(json.dumps(event.outputs, default=jsonable))
            else:
                console.print(event.outputs.get("text", event.outputs), end="")


def _pairs(items: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            errors.print(f"[red]expected name=value, got {item!r}[/red]")
            raise typer.Exit(2)
        try:
            parsed[name] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name] = raw  # plain text needs no JSON quotes
    return parsed


class _ErrorsAsExit:
    """Prints a modelyard error's status and message and exits 1, instead of a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        from modelyard.errors import ModelyardError

        if isinstance(error, ModelyardError):
            errors.print(f"[red]{error.code.name}[/red]: {error.message}")
            raise typer.Exit(1)


@app.command()
def demo() -> None:
    """The main job: build demo checkpoints offline, start a worker serving several
    models (examples/worker.yaml), call each over gRPC, print the results, stop it."""
    from modelyard_cli.demo import run_demo

    setup_logging(False)
    raise typer.Exit(run_demo(console))


def main() -> None:
    from modelyard_cli import cluster as cli_cluster
    from modelyard_cli import graph as cli_graph
    from modelyard_cli import health as cli_health
    from modelyard_cli import status as cli_status
    from modelyard_cli import up as cli_up

    cli_cluster.register(app)
    cli_graph.register(app)
    cli_up.register(app)
    cli_status.register(app)
    cli_health.register(app)
    app()


if __name__ == "__main__":
    main()
