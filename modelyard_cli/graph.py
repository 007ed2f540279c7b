"""`modelyard` commands for graphs: deploy and inspect graphs, run them.

    modelyard graph deploy examples/graphs/inference-graph.yaml
    modelyard graph list | show NAME [--format text|yaml|mermaid|dot] | delete NAME
    modelyard run inference-graph -i prompt="I have an idea!"

Graph commands talk to a composer at --composer (default: MODELYARD_COMPOSER_ADDRESS, else
the running local stack's, else 127.0.0.1:50070).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from modelyard_cli.mistakes import fail
from modelyard_cli.options import STACK_PANEL, Verbose
from modelyard_cli.state import default_address

console = Console()
graph_app = typer.Typer(
    no_args_is_help=True,
    help="Deploy, list, show, validate and delete graphs.\n\n"
    "Example: modelyard graph show inference-graph --format yaml",
)

ComposerOption = Annotated[
    str | None,
    typer.Option(
        "--composer",
        help="host:port of a composer.",
        show_default="$MODELYARD_COMPOSER_ADDRESS, else the local stack's",
    ),
]
GraphFile = Annotated[Path, typer.Argument(help="A graph file (.yaml, .yml or .json).")]
GraphName = Annotated[str, typer.Argument(help="A deployed graph's name.")]
Inputs = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="name=value (JSON or text)")
]


def _address(given: str | None) -> str:
    return given or default_address("composer")


def _call(address: str | None, call: Callable[[Any], Any]) -> Any:
    from modelyard.v1 import composer_pb2_grpc
    from modelyard_cli.rpc import call_service

    return call_service(
        _address(address),
        composer_pb2_grpc.ComposerStub,
        call,
        what="the composer",
        option="--composer",
    )


@graph_app.command("deploy")
def graph_deploy(
    path: GraphFile, composer: ComposerOption = None, verbose: Verbose = False
) -> None:
    """Validate and store a graph file (YAML or JSON); a graph of that name is replaced.

    Example:

        modelyard graph deploy examples/graphs/inference-graph.yaml
    """
    from composer.spec import load_graph
    from modelyard.v1 import composer_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    graph = _load(load_graph, path)
    reply = _call(composer, lambda stub: stub.DeployGraph(pb.DeployGraphRequest(graph=graph)))
    for warning in reply.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"deployed graph [bold]{graph.name}[/bold] ({len(graph.nodes)} nodes)")


@graph_app.command("validate")
def graph_validate(
    path: GraphFile, composer: ComposerOption = None, verbose: Verbose = False
) -> None:
    """Check a graph file against the running cluster without storing it (exit 1: invalid).

    Example:

        modelyard graph validate examples/graphs/ensemble.yaml
    """
    from composer.spec import load_graph
    from modelyard.v1 import composer_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    graph = _load(load_graph, path)
    reply = _call(composer, lambda stub: stub.ValidateGraph(pb.ValidateGraphRequest(graph=graph)))
    for error in reply.errors:
        console.print(f"[red]error:[/red] {escape(error)}")
    for warning in reply.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if reply.errors:
        raise typer.Exit(1)
    console.print(f"graph {graph.name} is valid")


@graph_app.command("list")
def graph_list(composer: ComposerOption = None, verbose: Verbose = False) -> None:
    """List deployed graphs.

    Example:

        modelyard graph list
    """
    from modelyard.v1 import composer_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    reply = _call(composer, lambda stub: stub.ListGraphs(pb.ListGraphsRequest()))
    table = Table()
    table.add_column("graph", no_wrap=True)  # a name to copy: whole, on one line
    for column in ("nodes", "inputs", "outputs", "description"):
        table.add_column(column, overflow="fold")  # folded, never cut
    for graph in reply.graphs:
        cells = (
            graph.name,
            str(len(graph.nodes)),
            ", ".join(i.name for i in graph.inputs),
            ", ".join(sorted(graph.outputs)),
            graph.description,
        )
        table.add_row(*map(Text, cells))  # text, not markup
    console.print(table)


@graph_app.command("show")
def graph_show(
    name: GraphName,
    composer: ComposerOption = None,
    format: Annotated[
        str, typer.Option(help="text, yaml (deploys back as it is), mermaid or dot.")
    ] = "text",
    verbose: Verbose = False,
) -> None:
    """Show a deployed graph: drawn as text, or as YAML, Mermaid or DOT.

    Example (the YAML is a graph file: edit it, deploy it back):

        modelyard graph show inference-graph --format yaml > graph.yaml
    """
    from composer.drawing import draw
    from modelyard.v1 import composer_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    reply = _call(composer, lambda stub: stub.GetGraph(pb.GetGraphRequest(name=name)))
    try:
        drawn = draw(reply.graph, format)
    except ValueError as error:
        fail(str(error))
    # as it is, not through rich: rich would wrap long lines at the terminal's width (into
    # YAML that no longer parses) and read [brackets] as markup
    typer.echo(drawn.rstrip("\n"))


@graph_app.command("delete")
def graph_delete(
    name: GraphName, composer: ComposerOption = None, verbose: Verbose = False
) -> None:
    """Delete a deployed graph.

    Example:

        modelyard graph delete inference-graph
    """
    from modelyard.v1 import composer_pb2 as pb
    from modelyard_cli.main import setup_logging

    setup_logging(verbose)
    _call(composer, lambda stub: stub.DeleteGraph(pb.DeleteGraphRequest(name=name)))
    console.print(f"deleted graph {escape(name)}")


def run(
    graph: GraphName,
    input: Inputs = None,
    composer: ComposerOption = None,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 120.0,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="text: node events, chunks, the result and a timeline; json: the result "
            "only, for scripts.",
        ),
    ] = "text",
    verbose: Verbose = False,
) -> None:
    """Run a graph, showing node events, streamed chunks, the result and a timeline.

    Example:

        modelyard run inference-graph -i prompt="I have an idea!"
    """
    from modelyard_cli.graph_output import print_outputs_json, print_run
    from modelyard_cli.main import _pairs, setup_logging

    setup_logging(verbose)
    if output not in ("text", "json"):
        fail(f"--output is text or json, got {output!r}")
    inputs = _pairs(input or [])
    address = _address(composer)
    if output == "json":
        raise typer.Exit(print_outputs_json(address, graph, inputs, timeout=timeout))
    raise typer.Exit(print_run(address, graph, inputs, console, timeout=timeout))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=STACK_PANEL)(run)
    app.add_typer(graph_app, name="graph", rich_help_panel=STACK_PANEL)


def _load(loader: Callable[[Path], Any], path: Path) -> Any:
    from modelyard.errors import ModelyardError

    try:
        return loader(path)
    except ModelyardError as error:  # every error of load_graph names the file
        fail(f"cannot load the graph: {error.message}")
