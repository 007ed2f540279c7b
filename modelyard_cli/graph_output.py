"""Client helpers for graphs: deploy files, and run a graph printing it as it goes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from modelyard.composer_client import (
    Chunk,
    ComposerClient,
    NodeFinished,
    NodeStarted,
    Result,
)
from modelyard.errors import ModelyardError
from modelyard.values import jsonable


def deploy_files(address: str, files: Sequence[Path], console: Console) -> None:
    from composer.spec import load_graph

    with ComposerClient(address, timeout=30) as client:
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
    """Runs `graph` with RunStream: node events live, chunks as they stream, the outputs,
    and a per-node timeline. Returns a process exit code."""
    streaming_node = ""
    with ComposerClient(address, timeout=timeout) as client:
        try:
            for event in client.run_stream(graph, inputs):
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
            console.print(f"[red]{error.code.name}[/red]: {error.message}")
            return 1
    return 0


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
        table.add_column(column)
    for timing in sorted(result.timeline, key=lambda t: t.started_at):
        table.add_row(
            timing.node,
            f"{timing.started_at * 1000:.1f}",
            f"{timing.duration * 1000:.1f}",
            ", ".join(timing.workers),
            timing.status,
        )
    console.print(table)
