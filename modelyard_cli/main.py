"""modelyard serves models over gRPC and composes them into inference graphs.

The main job is the local stack: etcd, a control plane, workers and a
composer, serving the example graphs (examples/stack.yaml).

    make demo               start it, run inference-graph once, print, stop
    modelyard up            start it and keep it running (Ctrl-C stops it)
    modelyard up --detach   the same in the background
    modelyard status        its services: addresses and health
    modelyard run inference-graph -i prompt="I have an idea!"
    modelyard graph list    the deployed graphs (also show, deploy, delete)
    modelyard down          stop a stack started with --detach

Commands find the running local stack themselves (--composer and
--controlplane point them elsewhere). `modelyard COMMAND --help` shows a
command's options, their defaults and an example; --verbose shows the
traceback of an error.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard_cli.mistakes import Commands, fail
from modelyard_cli.options import SERVICES_PANEL, TOOLS_PANEL, Host, PortFile, Verbose, from_config

if TYPE_CHECKING:
    from rich.console import Console

    from modelyard_server.logging_setup import LogSettings
    from workers.settings import WorkerSettings

app = typer.Typer(
    cls=Commands,
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    pretty_exceptions_show_locals=False,  # a traceback must not print tokens or passwords
)


def _console() -> Console:
    # imported by the commands that print with rich only: a worker's process never does
    from rich.console import Console

    return Console()


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"modelyard {version('modelyard')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    pass


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def service_logging(settings: LogSettings, verbose: bool) -> None:
    """A service's logs as its settings say (text or JSON, one line per event, with the
    trace and span ids); --verbose makes them DEBUG whatever the level setting."""
    from modelyard_server.logging_setup import setup_logging as setup_service_logging

    setup_service_logging(settings.model_copy(update={"level": "DEBUG"}) if verbose else settings)


@app.command(rich_help_panel=SERVICES_PANEL)
def worker(
    config: Annotated[
        Path | None,
        typer.Option(help="Worker config (YAML): models, tags, etcd; the options below win."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="gRPC port; 0 picks a free one.", show_default=from_config(50051)),
    ] = None,
    host: Host = None,
    port_file: PortFile = None,
    strict: Annotated[
        bool | None,
        typer.Option(help="Refuse to start if a model fails.", show_default=from_config("no")),
    ] = None,
    etcd: Annotated[
        list[str] | None,
        typer.Option(
            help="Register in etcd at host:port (repeat for several members).",
            show_default=from_config("none: a standalone worker"),
        ),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(help="This worker's id in etcd.", show_default=from_config("<host>-<port>")),
    ] = None,
    describe: Annotated[bool, typer.Option(help="Print models and tags, then exit.")] = False,
    verbose: Verbose = False,
) -> None:
    """Serve the models of a worker config over gRPC (modelyard.v1.Predict).

    Example:

        modelyard worker --config examples/worker.yaml --port 50051
    """
    from modelyard_cli.preflight import check_etcd, check_ports
    from modelyard_server.settings_file import SETTINGS_ERRORS, settings_problem
    from workers.settings import WorkerSettings, load_settings, require_models

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
        require_models(settings)
    except SETTINGS_ERRORS as error:
        fail(f"invalid worker config: {settings_problem(error, WorkerSettings)}")
    if describe:
        _describe_worker(settings)
        return
    service_logging(settings.logging, verbose)
    check_ports(settings.host, settings.port, metrics_port=settings.metrics_port)
    if settings.etcd is not None:
        check_etcd(settings.etcd)
    from workers.server import run

    raise typer.Exit(asyncio.run(run(settings)))


def _describe_worker(settings: WorkerSettings) -> None:
    from rich.table import Table

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
    console = _console()
    console.print(table)
    tags = Table(title="device tags")
    tags.add_column("tag")
    tags.add_column("value")
    for key, value in worker_tags((m.device for m in settings.models), settings.tags).items():
        tags.add_row(key, value)
    console.print(tags)


def served_models(
    address: Annotated[str, typer.Argument(help="host:port of a worker")],
    verbose: Verbose = False,
) -> None:
    """List the models a worker serves and their state.

    Example:

        modelyard models served 127.0.0.1:50051
    """
    setup_logging(verbose)
    from rich.table import Table
    from rich.text import Text

    from modelyard.v1 import predict_pb2 as pb
    from modelyard_cli.credentials import worker_client

    with _ErrorsAsExit(address), worker_client(address, 10) as client:
        statuses = client.list_models()
    table = Table()
    table.add_column("name", no_wrap=True)  # a name to copy: whole, on one line
    for column in ("task", "version", "state", "reason"):
        table.add_column(column, overflow="fold")  # folded, never cut
    for status in statuses:
        state = pb.ModelState.Name(status.state).removeprefix("MODEL_STATE_").lower()
        cells = (status.model, status.task, status.version, state, status.state_reason)
        table.add_row(*map(Text, cells))  # text, not markup
    _console().print(table)


@app.command(rich_help_panel=TOOLS_PANEL)
def metadata(
    address: Annotated[str, typer.Argument(help="host:port of a worker")],
    model: Annotated[str, typer.Argument(help="model name")],
    verbose: Verbose = False,
) -> None:
    """Describe one model: task, signature, defaults, device, version, state (as JSON).

    Example:

        modelyard metadata 127.0.0.1:50051 sentiment
    """
    setup_logging(verbose)
    from google.protobuf.json_format import MessageToDict

    from modelyard_cli.credentials import worker_client

    with _ErrorsAsExit(address), worker_client(address, 10) as client:
        response = client.metadata(model)
    _console().print_json(json.dumps(MessageToDict(response, preserving_proto_field_name=True)))


@app.command(rich_help_panel=TOOLS_PANEL)
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
    verbose: Verbose = False,
) -> None:
    """Call one model and print its outputs.

    Example:

        modelyard predict 127.0.0.1:50051 sentiment -i text="I love it"
    """
    setup_logging(verbose)
    from modelyard.values import jsonable
    from modelyard_cli.credentials import worker_client

    inputs, parameters = _pairs(input or []), _pairs(param or [])
    console = _console()
    with _ErrorsAsExit(address), worker_client(address, timeout) as client:
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
            fail(f"expected name=value, got {item!r}")
        try:
            parsed[name] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name] = raw  # plain text needs no JSON quotes
    return parsed


class _ErrorsAsExit:
    """Prints a worker's error as the other commands print a service's (`rpc_problem`:
    the status and message, or "cannot reach the worker at ..." when nothing answers) and
    exits 1, instead of a traceback."""

    def __init__(self, address: str) -> None:
        self._address = address

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        from modelyard.errors import ModelyardError
        from modelyard_cli.rpc import rpc_problem

        if isinstance(error, ModelyardError):
            fail(rpc_problem(error.code, error.message, self._address, "the worker"), code=1)


@app.command(rich_help_panel=TOOLS_PANEL)
def demo(verbose: Verbose = False) -> None:
    """One worker serving several models side by side, each called once.

    Builds the demo checkpoints offline, starts a worker for examples/worker.yaml,
    calls each model over gRPC, prints the results and stops it.

    Example (what `make demo-worker` runs):

        modelyard demo
    """
    from modelyard_cli.demo import run_demo

    setup_logging(verbose)
    raise typer.Exit(run_demo(_console()))


#: Every top-level command, and the module of this package that registers it (None: this
#: one). A command line that names one imports that module only: a service's process (the
#: stack starts each as `modelyard <service>`) then holds none of the other commands'
#: imports, such as the client core's numpy and the local stack's etcd client in a control
#: plane.
COMMANDS: dict[str, str | None] = {
    "worker": None,
    "metadata": None,
    "predict": None,
    "demo": None,
    "controlplane": "controlplane",
    "workers": "cluster",
    "drain": "cluster",
    "undrain": "cluster",
    "composer": "composer",
    "run": "graph",
    "graph": "graph",
    "gateway": "gateway",
    "up": "up",
    "down": "up",
    "status": "status",
    "health": "health",
    "models": "models",
}


@functools.cache
def _register(module: str) -> None:
    """Adds the commands of `module` to `app` (once: a second call would list them twice)."""
    registered = importlib.import_module(f"modelyard_cli.{module}")
    if module == "models":
        # `modelyard models` is the registered APIs' group; a worker's own models are one
        # of its commands (`served`), so every kind of model is listed under one name
        registered.models_app.command("served")(served_models)
    registered.register(app)


@functools.cache
def full_app() -> typer.Typer:
    """`app` with the commands of the other modules too, in the order of the help."""
    for module in dict.fromkeys(m for m in COMMANDS.values() if m is not None):
        _register(module)
    return app


def app_for(args: Sequence[str]) -> typer.Typer:
    """`app` with what `modelyard <args>` needs: the named command's module, or every
    command when the first argument names none (the top-level help, `--version`, or a
    mistyped name, for which the error suggests the nearest commands)."""
    if not args or args[0] not in COMMANDS:
        return full_app()
    module = COMMANDS[args[0]]
    if module is not None:
        _register(module)
    return app


def main() -> None:
    app_for(sys.argv[1:])()


if __name__ == "__main__":
    main()
