"""Client helpers for graphs: deploy files, and run a graph printing it as it goes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map, jsonable


def deploy_files(address: str, files: Sequence[Path], console: Console) -> None:
    from composer.spec import load_graph

    with grpc.insecure_channel(address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        for path in files:
            graph = load_graph(path)
            reply = stub.DeployGraph(pb.DeployGraphRequest(graph=graph), timeout=30)
            warned = f" ({'; '.join(reply.warnings)})" if reply.warnings else ""
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
    request = pb.RunStreamRequest(name=graph)
    fill_value_map(request.inputs, inputs)
    streaming_node = ""
    with grpc.insecure_channel(address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        try:
            for event in stub.RunStream(request, timeout=timeout):
                kind = event.WhichOneof("event")
                if kind == "chunk":
                    streaming_node = _print_chunk(console, event.chunk, streaming_node)
                    continue
                if streaming_node:
                    console.print()
                    streaming_node = ""
                if kind == "node_started":
                    console.print(
                        f"[dim]{event.node_started.at:7.3f}s[/dim] ▶ {event.node_started.node}"
                    )
                elif kind == "node_finished":
                    _print_finished(console, event.node_finished)
                elif kind == "result":
                    _print_result(console, event.result)
        except grpc.RpcError as error:
            console.print(f"[red]{error.code().name}[/red]: {error.details()}")
            return 1
    return 0


def _print_chunk(console: Console, chunk: pb.NodeChunk, streaming_node: str) -> str:
    outputs = from_value_map(chunk.outputs)
    if streaming_node != chunk.node:
        if streaming_node:
            console.print()
        console.print(f"  [cyan]{chunk.node}[/cyan] ⇢ ", end="")
    if set(outputs) == {"text"}:
        console.print(outputs["text"], end="", markup=False, highlight=False)
    else:
        console.print(json.dumps(outputs, default=str), end=" ", markup=False, highlight=False)
    return chunk.node


def _print_finished(console: Console, timing: pb.NodeTiming) -> None:
    mark = {"ok": "[green]✓[/green]", "skipped": "[yellow]∅[/yellow]"}.get(
        timing.status, "[red]✗[/red]"
    )
    where = f" on {', '.join(timing.workers)}" if timing.workers else ""
    why = f" — {timing.reason}" if timing.reason else ""
    console.print(
        f"[dim]{timing.started_at + timing.duration:7.3f}s[/dim] {mark} {timing.node} "
        f"({timing.duration * 1000:.1f} ms{where}){why}"
    )


def _print_result(console: Console, result: pb.RunResponse) -> None:
    console.print("[bold]outputs[/bold]")
    console.print_json(json.dumps(from_value_map(result.outputs), default=jsonable))
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
