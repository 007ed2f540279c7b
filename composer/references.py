"""References: the strings a graph uses to name values, and where its nodes make them.

inputs.prompt        a graph input
gen                  node `gen`'s whole outputs map
gen.text             one field of it
cls.scores.0         deeper: map keys and list indexes, dot-separated
item                 the current element inside a map node (item.text: a field of it)

This module is the one answer to "which values and nodes does a node reference": `uses`
lists them (validation checks each, the run's plan waits on the nodes they name, drawing
draws them as edges), `dependencies` gives the graph's node-to-node edges, and `calls` the
model calls a node may make (the service describes their models for validation).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.errors import InvalidArgument
from modelyard.v1 import graph_pb2

#: One dot-separated part of a reference; node and input names are one (no dots).
SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Ref:
    kind: Literal["input", "node", "item"]
    name: str  # the input's or node's name; "" for item
    path: tuple[str, ...] = ()  # fields and list indexes below it

    def __str__(self) -> str:
        head = {"input": f"inputs.{self.name}", "node": self.name, "item": "item"}[self.kind]
        return ".".join((head, *self.path))


@functools.lru_cache(maxsize=4096)
def parse_ref(text: str) -> Ref:
    """Parses a reference; raises InvalidArgument saying what is wrong with it. Memoised: a
    run resolves each of its graph's references once a node, with the same texts run after
    run (a Ref is immutable; a malformed text raises every time)."""
    parts = text.split(".")
    if not text or any(not SEGMENT.match(p) for p in parts):
        raise InvalidArgument(
            f"reference {text!r} is malformed: use inputs.<name>, <node>, <node>.<field> or item"
        )
    if parts[0] == "inputs":
        if len(parts) < 2:
            raise InvalidArgument(f"reference {text!r} names no input: use inputs.<name>")
        return Ref("input", parts[1], tuple(parts[2:]))
    if parts[0] == "item":
        return Ref("item", "", tuple(parts[1:]))
    return Ref("node", parts[0], tuple(parts[1:]))


def parsed_or_none(text: str) -> Ref | None:
    """The reference, or None when it is malformed (validation reports that on its own)."""
    try:
        return parse_ref(text)
    except InvalidArgument:
        return None


@dataclass(frozen=True, slots=True)
class Use:
    """One reference a node makes.

    `holder` says where it is written, for messages: "input 'text'", "case 0 input 'text'",
    "default input 'text'", "'over'", "case 0 condition" or "value 1". `path` says it for
    programs, below the node's own path, in the graph file's form:

        inputs.text   map.over   map.call.inputs.text   aggregate.values[1]
        switch.cases[0].when.value   switch.cases[0].call.inputs.text   switch.default.inputs.text

    `call` is the model call it is an input of (role "input" only); `item_ok` whether
    "item" may appear there (only in a map node's call inputs)."""

    text: str
    role: Literal["input", "over", "condition", "value"]
    holder: str
    path: str
    call: graph_pb2.ModelCall | None = None
    item_ok: bool = False


def uses(node: graph_pb2.Node) -> Iterator[Use]:
    """Every reference `node` makes, in a fixed order: a map's 'over' before its call's
    inputs; a switch's cases in turn (condition, then inputs), then its default; a call's
    inputs by name. An unset 'over' or condition is no reference."""
    kind = node.WhichOneof("kind")
    if kind == "model":
        yield from _inputs("", "", node.model)
    elif kind == "map":
        if node.map.over:
            yield Use(node.map.over, "over", "'over'", "map.over")
        yield from _inputs("", "map.call.", node.map.call, item_ok=True)
    elif kind == "switch":
        for i, case in enumerate(node.switch.cases):
            if case.when.value:
                where = f"switch.cases[{i}]"
                yield Use(
                    case.when.value, "condition", f"case {i} condition", f"{where}.when.value"
                )
            yield from _inputs(f"case {i} ", f"switch.cases[{i}].call.", case.call)
        yield from _inputs("default ", "switch.default.", node.switch.default)
    elif kind == "aggregate":
        for i, value in enumerate(node.aggregate.values):
            yield Use(value, "value", f"value {i}", f"aggregate.values[{i}]")


def _inputs(
    prefix: str, path: str, call: graph_pb2.ModelCall, *, item_ok: bool = False
) -> Iterator[Use]:
    for name, text in sorted(call.inputs.items()):
        yield Use(text, "input", f"{prefix}input '{name}'", f"{path}inputs.{name}", call, item_ok)


def calls(node: graph_pb2.Node) -> Iterator[graph_pb2.ModelCall]:
    """The model calls `node` may make: a model node's, a map's, each switch case's and the
    switch's default."""
    kind = node.WhichOneof("kind")
    if kind == "model":
        yield node.model
    elif kind == "map":
        yield node.map.call
    elif kind == "switch":
        yield from (case.call for case in node.switch.cases)
        if node.switch.HasField("default"):
            yield node.switch.default


def referenced_nodes(texts: Iterable[str]) -> list[str]:
    """The node names well-formed references among `texts` name, each once, first seen first."""
    refs = (parsed_or_none(text) for text in texts)
    return list(dict.fromkeys(ref.name for ref in refs if ref is not None and ref.kind == "node"))


def dependencies(graph: graph_pb2.Graph) -> dict[str, set[str]]:
    """Node -> the nodes it references (itself too, when it does; malformed references and
    references to nodes the graph does not have left out)."""
    deps: dict[str, set[str]] = {node.name: set() for node in graph.nodes}
    for node in graph.nodes:
        deps[node.name].update(n for n in referenced_nodes(u.text for u in uses(node)) if n in deps)
    return deps


class Missing(Exception):
    """A referenced field does not exist in the value it points into."""


def resolve(
    ref: Ref,
    inputs: Mapping[str, Any],
    nodes: Mapping[str, Any],
    item: Any = None,
) -> Any:
    """The value a reference names, given the run's inputs, node outputs and map item."""
    if ref.kind == "input":
        value = inputs[ref.name]
    elif ref.kind == "node":
        value = nodes[ref.name]
    else:
        value = item
    for step in ref.path:
        value = _step(value, step, ref)
    return value


def _step(value: Any, step: str, ref: Ref) -> Any:
    if isinstance(value, Mapping):
        if step not in value:
            known = ", ".join(sorted(value)) or "none"
            raise Missing(f"{ref}: no field '{step}' (fields: {known})")
        return value[step]
    if isinstance(value, list | tuple) and step.lstrip("-").isdigit():
        index = int(step)
        if not -len(value) <= index < len(value):
            raise Missing(f"{ref}: index {index} is out of range for a list of {len(value)}")
        return value[index]
    raise Missing(f"{ref}: cannot take '{step}' of {type(value).__name__}")
