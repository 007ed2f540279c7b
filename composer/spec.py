"""Graphs as YAML or JSON files: the file form (`modelyard.graph_spec`) read from and
written to text.

    graph = load_graph(Path("examples/graphs/inference-graph.yaml"))
    print(dump_graph(graph))          # canonical YAML; dump_graph(graph, "json") for JSON

The mapping <-> proto translation is in the client core, where client apps use it without
a YAML parser; `graph_from_dict` and `graph_to_dict` are re-exported here for the services
and tools that read files and dicts side by side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from modelyard.errors import InvalidArgument
from modelyard.graph_spec import graph_from_dict, graph_to_dict, kind_of
from modelyard.v1 import graph_pb2 as g
from modelyard_server.settings_file import FileProblem, read_yaml

__all__ = ["dump_graph", "graph_from_dict", "graph_to_dict", "load_graph"]


def load_graph(path: Path) -> g.Graph:
    """Reads a graph file (.yaml, .yml or .json); every error is InvalidArgument naming the
    file, and the line for a syntax error."""
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidArgument(f"{path}: graph files end in .yaml, .yml or .json")
    try:
        data = _read_json(path) if suffix == ".json" else read_yaml(path)
    except FileProblem as problem:
        raise InvalidArgument(str(problem)) from None
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{path}: a graph file holds a mapping, got {kind_of(data)}")
    try:
        return graph_from_dict(data)
    except InvalidArgument as error:
        raise error.within(str(path)) from None  # its reason (GRAPH_INVALID) kept


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise FileProblem(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise FileProblem(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise FileProblem(f"{path}, line {error.lineno}: {error.msg}") from None


def dump_graph(graph: g.Graph, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The graph as file text, in the canonical form `graph_to_dict` returns."""
    data = graph_to_dict(graph)
    try:
        if fmt == "json":
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        if fmt == "yaml":
            return str(
                yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
            )
    except (TypeError, yaml.YAMLError) as error:  # tensors (and bytes in JSON) have no form
        raise InvalidArgument(f"cannot write this graph as {fmt}: {error}") from None
    raise InvalidArgument(f"unknown graph format {fmt!r}: use yaml or json")


class _Dumper(yaml.SafeDumper):
    """Writes short collections of plain values on one line (`inputs: {text: gen.text}`),
    as people write them, and everything else as blocks."""


def _flow(items: Iterable[Any], text: str) -> bool:
    return len(text) <= 72 and not any(isinstance(item, dict | list) for item in items)


_Dumper.add_representer(
    dict,
    lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map", data, flow_style=_flow(data.values(), str(data))
    ),
)
_Dumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=_flow(data, str(data))
    ),
)
