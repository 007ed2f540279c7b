"""Drawing a graph for people: an indented text tree for the terminal, Mermaid and DOT for
docs, and YAML (the file format)."""

from __future__ import annotations

from composer.references import Ref, Use, parse_ref, uses
from modelyard.enum_names import AGGREGATE_METHODS, VALUE_KINDS
from modelyard.v1 import graph_pb2

_STREAMS = {
    graph_pb2.STREAM_MODE_CHUNK: "streams chunk",
    graph_pb2.STREAM_MODE_SEGMENT: "streams segment",
}


def edges(graph: graph_pb2.Graph) -> list[tuple[str, str, str]]:
    """(from, to, label) for every reference: a node's inputs, and the graph's outputs."""
    found: list[tuple[str, str, str]] = []
    for node in graph.nodes:
        for use in uses(node):
            ref = parse_ref(use.text)
            if ref.kind != "item":
                found.append((_source(ref), node.name, _label(node, use)))
    for output, text in sorted(graph.outputs.items()):
        found.append((_source(parse_ref(text)), f"outputs.{output}", ""))
    return found


def _source(ref: Ref) -> str:
    return f"inputs.{ref.name}" if ref.kind == "input" else ref.name


def _label(node: graph_pb2.Node, use: Use) -> str:
    if use.role == "over":
        return "map over"
    if use.role == "condition":
        return "switch on"
    if use.role == "value":
        return AGGREGATE_METHODS.name(node.aggregate.method)
    return _STREAMS.get(use.call.stream, "") if use.call is not None else ""


def _describe(node: graph_pb2.Node) -> str:
    kind = node.WhichOneof("kind")
    if kind == "model":
        return f"model {node.model.model}"
    if kind == "map":
        return f"map {node.map.call.model}"
    if kind == "switch":
        return "switch"
    return f"aggregate {AGGREGATE_METHODS.name(node.aggregate.method)}"


def draw(graph: graph_pb2.Graph, fmt: str = "text") -> str:
    if fmt == "yaml":
        from composer.spec import dump_graph

        return dump_graph(graph, "yaml")
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for source, target, label in edges(graph):
            arrow = f"-- {label} -->" if label else "-->"
            lines.append(f'  {_id(source)}["{source}"] {arrow} {_id(target)}["{target}"]')
        return "\n".join(lines)
    if fmt == "dot":
        lines = [f'digraph "{graph.name}" {{', "  rankdir=LR;"]
        for source, target, label in edges(graph):
            lines.append(f'  "{source}" -> "{target}"' + (f' [label="{label}"];' if label else ";"))
        return "\n".join([*lines, "}"])
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r}: use text, yaml, mermaid or dot")
    incoming: dict[str, list[str]] = {}
    for source, target, label in edges(graph):
        incoming.setdefault(target, []).append(source + (f" ({label})" if label else ""))
    lines = [f"graph {graph.name}" + (f" — {graph.description}" if graph.description else "")]
    lines += [f"  input  {i.name}: {VALUE_KINDS.name(i.kind)}" for i in graph.inputs]
    for node in graph.nodes:
        flags = " (optional)" if node.optional else ""
        lines.append(f"  node   {node.name}: {_describe(node)}{flags}")
        lines += [f"           ← {source}" for source in incoming.get(node.name, [])]
    for output in sorted(graph.outputs):
        lines.append(f"  output {output} ← {graph.outputs[output]}")
    return "\n".join(lines)


def _id(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")
