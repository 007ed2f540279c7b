"""Drawing a graph for people: an indented text tree for the terminal, Mermaid and DOT for
docs, and YAML (the file format)."""

from __future__ import annotations

from composer.references import parse_ref
from modelyard.v1 import graph_pb2


def edges(graph: graph_pb2.Graph) -> list[tuple[str, str, str]]:
    """(from, to, label) for every reference: a node's inputs, and the graph's outputs."""
    found: list[tuple[str, str, str]] = []
    for node in graph.nodes:
        for ref_text, label in _references(node):
            ref = parse_ref(ref_text)
            if ref.kind == "item":
                continue
            source = f"inputs.{ref.name}" if ref.kind == "input" else ref.name
            found.append((source, node.name, label))
    for output, ref_text in sorted(graph.outputs.items()):
        ref = parse_ref(ref_text)
        source = f"inputs.{ref.name}" if ref.kind == "input" else ref.name
        found.append((source, f"outputs.{output}", ""))
    return found


def _references(node: graph_pb2.Node) -> list[tuple[str, str]]:
    kind = node.WhichOneof("kind")
    calls: list[graph_pb2.ModelCall] = []
    refs: list[tuple[str, str]] = []
    if kind == "model":
        calls = [node.model]
    elif kind == "map":
        calls = [node.map.call]
        refs.append((node.map.over, "map over"))
    elif kind == "switch":
        calls = [case.call for case in node.switch.cases] + [node.switch.default]
        refs += [(case.when.value, "switch on") for case in node.switch.cases]
    elif kind == "aggregate":
        refs += [(value, node.aggregate.method) for value in node.aggregate.values]
    for call in calls:
        stream = graph_pb2.StreamMode.Name(call.stream).removeprefix("STREAM_MODE_").lower()
        label = "streams" if stream in ("chunk", "segment") else ""
        refs += [
            (ref, f"{label} {stream}".strip() if label else "") for ref in call.inputs.values()
        ]
    return refs


def _describe(node: graph_pb2.Node) -> str:
    kind = node.WhichOneof("kind")
    if kind == "model":
        return f"model {node.model.model}"
    if kind == "map":
        return f"map {node.map.call.model}"
    if kind == "switch":
        return "switch"
    return f"aggregate {node.aggregate.method}"


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
    lines += [f"  input  {i.name}: {i.kind or 'any'}" for i in graph.inputs]
    for node in graph.nodes:
        flags = " (optional)" if node.optional else ""
        lines.append(f"  node   {node.name}: {_describe(node)}{flags}")
        lines += [f"           ← {source}" for source in incoming.get(node.name, [])]
    for output in sorted(graph.outputs):
        lines.append(f"  output {output} ← {graph.outputs[output]}")
    return "\n".join(lines)


def _id(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")
