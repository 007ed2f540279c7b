"""The static analysis of a graph before it runs, for composer.engine: the run's inputs
checked against the graph's, every reference checked to name a node or input that exists,
each node's dependencies (the nodes whose outputs it waits for) and the streaming edges
(which plain model node each streaming consumer reads the stream of). What fails raises
InvalidArgument before any call."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from composer.references import Ref, parse_ref, referenced_nodes, uses
from modelyard.enum_names import kind_of_value_kind
from modelyard.errors import FieldViolation, InvalidArgument, ModelyardError, Reason
from modelyard.signature import Field, check_value
from modelyard.v1 import graph_pb2
from modelyard.values import from_value


def check_inputs(graph: graph_pb2.Graph, given: Mapping[str, Any]) -> dict[str, Any]:
    """A run's inputs checked against the graph's, and optional ones defaulted (null counts
    as not given for those); raises InvalidArgument naming the input."""
    return GraphInputs(graph).check(given)


@dataclass(frozen=True, slots=True)
class _Input:
    spec: graph_pb2.GraphInput
    field: Field | None  # None: the spec's kind is none known (reported when it is checked)


class GraphInputs:
    """A graph's declared inputs, read from its message once: a deployed graph's runs share
    one (`Plans.inputs_of`) instead of walking the message's inputs on every run."""

    def __init__(self, graph: graph_pb2.Graph) -> None:
        self.graph_name = graph.name
        self._inputs = [_Input(spec, _field_of(spec)) for spec in graph.inputs]
        self._declared = frozenset(i.spec.name for i in self._inputs)

    def check(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """`check_inputs` (its docstring) of the graph this was read from."""
        for name in given:
            if name not in self._declared:
                raise InvalidArgument(
                    f"unknown input '{name}'; graph '{self.graph_name}' takes: {self._takes()}",
                    reason=Reason.INPUT_UNKNOWN,
                    field=f"inputs.{name}",
                )
        checked: dict[str, Any] = {}
        for declared in self._inputs:
            spec, field = declared.spec, declared.field
            if field is None:
                raise InvalidArgument(f"graph input '{spec.name}' has no known kind ({spec.kind})")
            value = given.get(spec.name)
            if spec.name in given and (value is not None or spec.required):
                checked[spec.name] = check_value("input", field, value)
            elif spec.required:
                raise InvalidArgument(
                    f"missing input '{spec.name}' ({field.kind}); graph takes: {self._takes()}",
                    reason=Reason.INPUT_MISSING,
                    field=f"inputs.{spec.name}",
                )
            else:  # made anew for every run: a run may change its default's list or dict
                checked[spec.name] = from_value(spec.default) if spec.HasField("default") else None
        return checked

    def _takes(self) -> str:  # for the messages only: a run that is fine never spells it out
        return ", ".join(i.spec.name for i in self._inputs) or "none"


def _field_of(spec: graph_pb2.GraphInput) -> Field | None:
    kind = kind_of_value_kind(spec.kind)
    return None if kind is None else Field(spec.name, kind)


class Plan:
    """A graph's plan: who waits for whom, who streams to whom. It depends on the graph
    alone (references to inputs must name one the graph declares, and check_inputs gives
    every run all of those), so the runs of a deployed graph share one; it is not changed
    once made."""

    def __init__(self, graph: graph_pb2.Graph) -> None:
        self.graph = graph
        self.inputs = {spec.name for spec in graph.inputs}
        self.nodes = {node.name: node for node in graph.nodes}
        if len(self.nodes) != len(graph.nodes):
            raise InvalidArgument(f"graph '{graph.name}' has two nodes of the same name")
        self.deps = {name: self._references(node) for name, node in self.nodes.items()}
        for name, text in graph.outputs.items():
            try:
                self._check_known(parse_ref(text))
            except InvalidArgument as error:
                raise prefixed(error, f"output '{name}'", field=f"outputs.{name}") from None
        self.stream_from: dict[str, str] = {}  # consumer -> the node it streams from
        for name, node in self.nodes.items():
            if upstream := self._streamed_upstream(node):
                self.stream_from[name] = upstream
                self.deps[name].discard(upstream)

    def _references(self, node: graph_pb2.Node) -> set[str]:
        try:
            refs = [parse_ref(use.text) for use in uses(node) if use.text]
            for ref in refs:
                self._check_known(ref)
        except InvalidArgument as error:
            raise prefixed(error, f"node '{node.name}'") from None
        return {ref.name for ref in refs if ref.kind == "node"}

    def _check_known(self, ref: Ref) -> None:
        known: Collection[str] | None = {"node": self.nodes, "input": self.inputs}.get(ref.kind)
        if known is not None and ref.name not in known:
            raise InvalidArgument(f"'{ref}' names no {ref.kind}")

    def _streamed_upstream(self, node: graph_pb2.Node) -> str | None:
        if not _is_model(node) or node.model.stream == graph_pb2.STREAM_MODE_UNSPECIFIED:
            return None
        named = referenced_nodes(node.model.inputs.values())
        found = sorted(name for name in named if _is_plain(self.nodes[name]))
        if len(found) > 1:
            raise InvalidArgument(
                f"node '{node.name}': a streaming call consumes one model node's stream, "
                f"but its inputs reference {', '.join(found)}"
            )
        return found[0] if found else None


class Plans:
    """The plans of the deployed graphs a service runs, each made on its graph's first run.
    A deployed graph stays one object until it is deployed again (the store then holds a new
    one), so a plan is reused while its graph is the very object it was made from."""

    def __init__(self) -> None:
        self._made: dict[str, Plan] = {}  # graph name -> the plan of its current object
        self._inputs: dict[str, tuple[graph_pb2.Graph, GraphInputs]] = {}  # likewise

    def of(self, graph: graph_pb2.Graph) -> Plan:
        """`graph`'s plan; raises InvalidArgument as Plan does (nothing is kept then)."""
        plan = self._made.get(graph.name)
        if plan is None or plan.graph is not graph:
            plan = self._made[graph.name] = Plan(graph)
        return plan

    def inputs_of(self, graph: graph_pb2.Graph) -> GraphInputs:
        """`graph`'s inputs, read once per graph object (kept apart from its plan: a run's
        input errors come before its graph's)."""
        made = self._inputs.get(graph.name)
        if made is None or made[0] is not graph:
            made = self._inputs[graph.name] = (graph, GraphInputs(graph))
        return made[1]


def prefixed(
    error: ModelyardError, where: str, path: str = "", *, field: str = "", **metadata: str
) -> ModelyardError:
    """`error` with its code, reason and worker, its message prefixed "<where>: ", its field
    paths by `path` (a worker's "inputs.text" becomes the graph's "nodes[1].inputs.text",
    see `ModelyardError.within`) and `metadata` added. `field`: the field it is about when
    it names none itself (a reference that did not resolve names no field)."""
    moved = error.within(where, path, **metadata)
    if field and not moved.field_violations:
        moved.field_violations = (FieldViolation(field, moved.message),)
    return moved


def _is_model(node: graph_pb2.Node) -> bool:
    return node.WhichOneof("kind") == "model"


def _is_plain(node: graph_pb2.Node) -> bool:
    return _is_model(node) and node.model.stream == graph_pb2.STREAM_MODE_UNSPECIFIED
