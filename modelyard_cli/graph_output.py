"""Client helpers for graphs: deploy files, run a graph printing it as it goes, or print
only its outputs as JSON (for scripts: an error goes to stderr). An error is one line."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelyard.composer_client import (
    Chunk,
    NodeFinished,
    NodeStarted,
    Result,
)
from modelyard.errors import ModelyardError
from modelyard.values import jsonable
from modelyard_cli.credentials import composer_client
from modelyard_cli.rpc import rpc_problem


def deploy_files(address: str, files: Sequence[Path], console: Console) -> None:
    from composer.spec import load_graph

    with composer_client(address, 30) as client:
        for path in files:
            graph = load_graph(path)
            warnings = client.deploy(graph)
            warned = f" ({'; '.join(warnings)})" if warnings else ""
            console.print(f"deployed graph [bold]{graph.name}[/bold]{warned}")


def print_run(
    address: str,
    graph: str,
    inputs: Mapping[str, Any],
    console: Console,
    *,
    timeout: float = 120.0,
) -> int:
    """Runs `graph` with RunStream: the run's trace id first when the composer traces it
    (`trace <id>`, to look the run up in Jaeger), node events live, chunks as they stream,
    the outputs, and a per-node timeline. Returns a process exit code."""
    streaming_node = ""

    def print_trace(trace_id: str) -> None:
        console.print(f"trace {trace_id}", markup=False, highlight=False)

    with composer_client(address, timeout) as client:
        try:
            for event in client.run_stream(graph, inputs, on_trace=print_trace):
                if isinstance(event, Chunk):
                    streaming_node = _print_chunk(console, event, streaming_node)
                    continue
                if streaming_node:
                    console.print()
                    streaming_node = ""
                if isinstance(event, NodeStarted):
                    console.print(f"[dim]{event.at:7.3f}s[/dim] ▶ {event.node}")
                elif isinstance(event, NodeFinished):
                    _print_finished(console, event)
                elif isinstance(event, Result):
                    _print_result(console, event)
        except ModelyardError as error:
            if streaming_node:
                console.print()
            console.print(f"error: {_problem(address, error)}", markup=False, highlight=False)
            return 1
    return 0


def print_outputs_json(
    address: str, graph: str, inputs: Mapping[str, Any], *, timeout: float = 120.0
) -> int:
    """Runs `graph` and prints its outputs as JSON, and nothing else, on stdout. Returns a
    process exit code."""
    with composer_client(address, timeout) as client:
        try:
            result = client.run(graph, inputs)
        except ModelyardError as error:
            typer.echo(f"error: {_problem(address, error)}", err=True)
            return 1
    typer.echo(json.dumps(result.outputs, default=jsonable, indent=2, ensure_ascii=False))
    return 0


def _problem(address: str, error: ModelyardError) -> str:
    return rpc_problem(error.code, error.message, address, "the composer", "--composer")


def _print_chunk(console: Console, chunk: Chunk, streaming_node: str) -> str:
    outputs = chunk.outputs
    if streaming_node != chunk.node:
        if streaming_node:
            console.print()
        console.print(f"  [cyan]{chunk.node}[/cyan] ⇢ ", end="")
    if set(outputs) == {"text"}:
        console.print(outputs["text"], end="", markup=False, highlight=False)
    else:
        console.print(json.dumps(outputs, default=str), end=" ", markup=False, highlight=False)
    return chunk.node


def _print_finished(console: Console, timing: NodeFinished) -> None:
    mark = {"ok": "[green]✓[/green]", "skipped": "[yellow]∅[/yellow]"}.get(
        timing.status, "[red]✗[/red]"
    )
    where = f" on {', '.join(timing.workers)}" if timing.workers else ""
    why = f" — {timing.reason}" if timing.reason else ""
    console.print(
        f"[dim]{timing.started_at + timing.duration:7.3f}s[/dim] {mark} {timing.node} "
        f"({timing.duration * 1000:.1f} ms{where}){why}"
    )


def _print_result(console: Console, result: Result) -> None:
    console.print("[bold]outputs[/bold]")
    console.print_json(json.dumps(result.outputs, default=jsonable))
    table = Table(title="timeline")
    for column in ("node", "start (ms)", "duration (ms)", "worker", "status"):
        table.add_column(column, overflow="fold")  # folded, never cut
    for timing in sorted(result.timeline, key=lambda t: t.started_at):
        cells = (
            timing.node,
            f"{timing.started_at * 1000:.1f}",
            f"{timing.duration * 1000:.1f}",
            ", ".join(timing.workers),
            timing.status,
        )
        table.add_row(*map(Text, cells))  # text, not markup
    console.print(table)
