"""`modelyard` commands for graphs: run a composer, deploy and inspect graphs, run them.

    modelyard composer --etcd 127.0.0.1:2379 --controlplane 127.0.0.1:50050
    modelyard graph deploy examples/graphs/inference-graph.yaml
    modelyard graph list | show NAME [--format text|yaml|mermaid|dot] | delete NAME
    modelyard run inference-graph -i prompt="I have an idea!"

Graph commands talk to a composer at --composer (default: MODELYARD_COMPOSER_ADDRESS, else
the running local stack's, else 127.0.0.1:50070).
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
graph_app = typer.Typer(no_args_is_help=True, help="Deploy, list, show and delete graphs.")

ComposerOption = Annotated[str | None, typer.Option("--composer", help="host:port of a composer.")]
Inputs = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="name=value (JSON or text)")
]


def _address(given: str | None) -> str:
    return given or default_address("composer")


def _call(address: str | None, call: Callable[[Any], Any]) -> Any:
    from modelyard.v1 import composer_pb2_grpc
    from modelyard_cli.rpc import call_service

    return call_service(_address(address), composer_pb2_grpc.ComposerStub, call)


def composer(
    config: Annotated[Path | None, typer.Option(help="Composer config (YAML).")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port; 0 picks a free one.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    etcd: Annotated[list[str] | None, typer.Option(help="etcd endpoint (repeatable).")] = None,
    controlplane: Annotated[
        list[str] | None, typer.Option(help="Control-plane address (repeatable).")
    ] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here.")] = None,
) -> None:
    """Run a composer replica: stores graphs (in etcd) and runs them."""
    from composer.server import run
    from composer.settings import ComposerSettings
    from modelyard_cli.main import setup_logging
    from modelyard_server.settings_file import SETTINGS_ERRORS, build_settings

    setup_logging(False)
    overrides = {"port": port, "host": host, "port_file": port_file, "controlplanes": controlplane}
    try:
        settings = build_settings(ComposerSettings, config, overrides, etcd)
    except SETTINGS_ERRORS as error:
        errors.print(f"[red]invalid composer settings:[/red] {error}")
        raise typer.Exit(2) from None
    raise typer.Exit(asyncio.run(run(settings)))


@graph_app.command("deploy")
def graph_deploy(path: Path, composer: ComposerOption = None) -> None:
    """Validate and store a graph file (YAML or JSON)."""
    from composer.spec import load_graph
    from modelyard.v1 import composer_pb2 as pb

    graph = _load(load_graph, path)
    reply = _call(composer, lambda stub: stub.DeployGraph(pb.DeployGraphRequest(graph=graph)))
    for warning in reply.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"deployed graph [bold]{graph.name}[/bold] ({len(graph.nodes)} nodes)")


@graph_app.command("validate")
def graph_validate(path: Path, composer: ComposerOption = None) -> None:
    """Check a graph file against the running cluster without storing it."""
    from composer.spec import load_graph
    from modelyard.v1 import composer_pb2 as pb

    graph = _load(load_graph, path)
    reply = _call(composer, lambda stub: stub.ValidateGraph(pb.ValidateGraphRequest(graph=graph)))
    for error in reply.errors:
        console.print(f"[red]error:[/red] {error}")
    for warning in reply.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if reply.errors:
        raise typer.Exit(1)
    console.print(f"graph {graph.name} is valid")


@graph_app.command("list")
def graph_list(composer: ComposerOption = None) -> None:
    """List deployed graphs."""
    from modelyard.v1 import composer_pb2 as pb

    reply = _call(composer, lambda stub: stub.ListGraphs(pb.ListGraphsRequest()))
    table = Table()
    for column in ("graph", "nodes", "inputs", "outputs", "description"):
        table.add_column(column)
    for graph in reply.graphs:
        table.add_row(
            graph.name,
            str(len(graph.nodes)),
            ", ".join(i.name for i in graph.inputs),
            ", ".join(sorted(graph.outputs)),
            graph.description,
        )
    console.print(table)


@graph_app.command("show")
def graph_show(
    name: str,
    composer: ComposerOption = None,
    format: Annotated[str, typer.Option(help="text, yaml, mermaid or dot")] = "text",
) -> None:
    """Show a deployed graph: drawn as text, or as YAML, Mermaid or DOT."""
    from composer.drawing import draw
    from modelyard.v1 import composer_pb2 as pb

    reply = _call(composer, lambda stub: stub.GetGraph(pb.GetGraphRequest(name=name)))
    try:
        console.print(draw(reply.graph, format), markup=False, highlight=False)
    except ValueError as error:
        errors.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


@graph_app.command("delete")
def graph_delete(name: str, composer: ComposerOption = None) -> None:
    """Delete a deployed graph."""
    from modelyard.v1 import composer_pb2 as pb

    _call(composer, lambda stub: stub.DeleteGraph(pb.DeleteGraphRequest(name=name)))
    console.print(f"deleted graph {name}")


def run(
    graph: Annotated[str, typer.Argument(help="A deployed graph's name.")],
    input: Inputs = None,
    composer: ComposerOption = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 120.0,
) -> None:
    """Run a graph, showing node events, streamed chunks, the result and a timeline."""
    from modelyard_cli.graph_output import print_run
    from modelyard_cli.main import _pairs

    inputs = _pairs(input or [])
    code = print_run(_address(composer), graph, inputs, console, timeout=timeout)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    for command in (composer, run):
        app.command()(command)
    app.add_typer(graph_app, name="graph")


def _load(loader: Callable[[Path], Any], path: Path) -> Any:
    from modelyard.errors import ModelyardError

    try:
        return loader(path)
    except (ModelyardError, OSError) as error:
        errors.print(f"[red]cannot load {path}:[/red] {getattr(error, 'message', error)}")
        raise typer.Exit(2) from None
