"""Graph validation: everything that can be known before a run, all reported at once.

Errors make a graph unusable; warnings do not (a model no worker serves yet may be served
by the time the graph runs). Every message names where the problem is, e.g.

    node 'score': input 'text' references 'gen3.text', but there is no node 'gen3'

Each error also has a field path for programs (`Report.violations`), in the graph file's
form: `name`, `inputs.text`, `nodes[2].inputs.text` (the node's position in the graph),
`nodes[2].map.call.model`, `nodes[2].switch.cases[0].when.op`, `outputs.label`; `nodes` for
a cycle, which no one node is to blame for.

Given `metadata` (a model's GetModelMetadataResponse, or None when no worker serves it),
each model call is also checked against what the model really takes (its inputs, their
kinds, its parameters) and gives (the fields a reference takes from a model node); `served`
(every model some worker serves) adds a did-you-mean to an unserved model's warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import get_args

from composer.model_fit import a_kind, can_feed, did_you_mean, outputs_of
from composer.references import (
    SEGMENT,
    dependencies,
    parse_ref,
    parsed_or_none,
    referenced_nodes,
    uses,
)
from modelyard.enum_names import (
    AGGREGATE_METHODS,
    CONDITION_OPS,
    VALUE_KINDS,
    kind_of_value_kind,
)
from modelyard.errors import FieldViolation, InvalidArgument
from modelyard.selectors import parse_selector
from modelyard.signature import Field, Kind, check_value
from modelyard.times import seconds
from modelyard.v1 import graph_pb2 as g
from modelyard.v1.predict_pb2 import GetModelMetadataResponse
from modelyard.values import from_value

Metadata = Callable[[str], GetModelMetadataResponse | None]

# Graphs and models are named like workers name models; node and input names are one
# reference segment, so no dots (a dot would read as a field).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_RULE = "use letters, digits, '.', '_' and '-', starting with a letter or digit"
_SEGMENT_RULE = "use letters, digits, '_' and '-' (no dots: references use them)"
_RESERVED = ("inputs", "item")
_KINDS: tuple[Kind, ...] = get_args(Kind)
_STREAMS = {g.STREAM_MODE_CHUNK: "chunk", g.STREAM_MODE_SEGMENT: "segment"}


@dataclass
class Report:
    """What validation found: `errors` make the graph unusable, `warnings` do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Each error with the field path it is about, in the order of `errors`.
    violations: list[FieldViolation] = field(default_factory=list)


class Unchecked(Exception):
    """Raised by a `metadata` lookup when a model is served but its description could not
    be fetched: the call is then reported unchecked, with why, not as unserved."""


def validate(
    graph: g.Graph, metadata: Metadata | None = None, served: Collection[str] = ()
) -> Report:
    """Checks `graph`; with `metadata`, also each model call against the model's signature."""
    return _Validator(graph, metadata, served).run()


def _cycles(deps: dict[str, set[str]]) -> list[str]:
    """One message per back edge of a depth-first walk, written in the direction data flows
    ("a -> b": a feeds b). Iterative, so a long chain cannot exhaust the Python stack."""
    position = {name: i for i, name in enumerate(deps)}
    state: dict[str, str] = {}  # "open" while on the path, then "done"
    found = []
    for root in deps:
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(deps[root], key=position.__getitem__))]
        state[root] = "open"
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = "done"
                stack.pop()
            elif step not in state:
                state[step] = "open"
                path.append(step)
                stack.append(iter(sorted(deps[step], key=position.__getitem__)))
            elif state[step] == "open":
                loop = [*path[path.index(step) :], step]
                found.append("cycle: " + " -> ".join(reversed(loop)))
    return found


class _Validator:
    def __init__(self, graph: g.Graph, metadata: Metadata | None, served: Collection[str]) -> None:
        self.graph = graph
        self.metadata = metadata
        self.served = served
        self.nodes = {node.name: node for node in graph.nodes}
        self.report = Report()
        self.kinds = {node.name: node.WhichOneof("kind") for node in graph.nodes}
        self.inputs = {item.name for item in graph.inputs}
        # an unset or unknown kind is reported once, by check_inputs, and feeds anything here
        self.input_kinds = {
            item.name: kind_of_value_kind(item.kind) or "any" for item in graph.inputs
        }
        self.used: set[str] = set()  # input and node names something references
        self._described: dict[str, GetModelMetadataResponse | Unchecked | None] = {}

    def error(self, message: str, path: str) -> None:
        self.report.errors.append(message)
        self.report.violations.append(FieldViolation(path, message))

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)

    def run(self) -> Report:
        if not self.graph.name:
            self.error("graph has no name", "name")
        elif not _NAME.match(self.graph.name):
            self.error(f"graph name '{self.graph.name}' is invalid: {_NAME_RULE}", "name")
        self.check_inputs()
        self.check_names()
        for i, node in enumerate(self.graph.nodes):
            where = f"node '{node.name}'" if node.name else f"node at position {i}"
            self.check_node(where, f"nodes[{i}]", node)
        self.check_outputs()
        for message in _cycles(dependencies(self.graph)):
            self.error(message, "nodes")
        self.check_unused()
        return self.report

    def check_inputs(self) -> None:
        seen: set[str] = set()
        for i, item in enumerate(self.graph.inputs):
            where = f"input '{item.name}'"
            path = f"inputs.{item.name}" if item.name else f"inputs[{i}]"
            if not item.name:
                self.error(f"input at position {i} has no name", f"{path}.name")
            elif not SEGMENT.match(item.name):
                self.error(f"{where}: invalid name: {_SEGMENT_RULE}", path)
            elif item.name in seen:
                self.error(f"{where}: the name is used by more than one input", path)
            seen.add(item.name)
            if kind_of_value_kind(item.kind) is None:
                self.error(
                    f"{where}: {_unnamed('kind', VALUE_KINDS.names, item.kind)}", f"{path}.kind"
                )
            if not item.HasField("default"):
                continue
            if item.required:
                self.warn(f"{where}: it is required, so its default is never used")
            problem = _default_problem(item)
            if problem:
                self.error(problem, f"{path}.default")

    def check_names(self) -> None:
        seen: set[str] = set()
        for i, node in enumerate(self.graph.nodes):
            where, path = f"node '{node.name}'", f"nodes[{i}].name"
            if not node.name:
                self.error(f"node at position {i} has no name", path)
            elif node.name in _RESERVED:
                self.error(f"{where}: the name is reserved (references use inputs and item)", path)
            elif not SEGMENT.match(node.name):
                self.error(f"{where}: invalid name: {_SEGMENT_RULE}", path)
            elif node.name in seen:
                self.error(f"{where}: the name is used by more than one node", path)
            seen.add(node.name)

    def check_node(self, where: str, path: str, node: g.Node) -> None:
        """`path`: the node's ("nodes[2]"); a model node's call fields sit beside its name
        (`nodes[2].inputs.text`), as in the graph file's shorthand."""
        for use in uses(node):
            # a streaming call reads its upstream's chunks, whose fields no signature declares
            streams = use.call is not None and use.call.stream != g.STREAM_MODE_UNSPECIFIED
            subject = f"{where}: {use.holder}"
            at = f"{path}.{use.path}"
            self.check_ref(subject, at, use.text, item_ok=use.item_ok, fields=not streams)
        if (timeout := seconds(node.timeout)) < 0:
            self.error(f"{where}: timeout must be 0 or more, got {timeout:g}s", f"{path}.timeout")
        if node.retries < 0:
            self.error(f"{where}: retries must be 0 or more, got {node.retries}", f"{path}.retries")
        if (hedge_after := seconds(node.hedge_after)) < 0:
            self.error(
                f"{where}: hedge_after must be 0 or more, got {hedge_after:g}s",
                f"{path}.hedge_after",
            )
        kind = node.WhichOneof("kind")
        if kind == "model":
            self.check_call(where, "", path, node.model)
        elif kind == "map":
            self.check_map(where, f"{path}.map", node.map)
        elif kind == "switch":
            self.check_switch(where, f"{path}.switch", node.switch)
        elif kind == "aggregate":
            self.check_aggregate(where, f"{path}.aggregate", node.aggregate)
        else:
            self.error(f"{where}: has no kind (give one of model, map, switch, aggregate)", path)

    def check_ref(
        self, subject: str, path: str, text: str, *, item_ok: bool = False, fields: bool = True
    ) -> None:
        """`fields`: whether a field of a model node's outputs is checked against the model's
        declared outputs."""
        try:
            ref = parse_ref(text)
        except InvalidArgument as error:
            self.error(f"{subject}: {error.message}", path)
            return
        problem = ""
        if ref.kind == "input" and ref.name not in self.inputs:
            problem = f"the graph has no input '{ref.name}'"
        elif ref.kind == "node" and ref.name not in self.kinds:
            problem = f"there is no node '{ref.name}'"
        elif ref.kind == "item" and not item_ok:
            problem = "'item' exists only in the inputs of a map node's call"
        elif ref.kind == "node" and ref.path and fields:
            problem = self.missing_field(ref.name, ref.path[0])
        if problem:
            self.error(f"{subject} references '{text}', but {problem}", path)
        if ref.kind != "item":
            self.used.add(ref.name if ref.kind == "node" else f"inputs.{ref.name}")

    def check_call(self, where: str, prefix: str, path: str, call: g.ModelCall) -> None:
        """`prefix` says which call of the node it is: "" (a model node's), "call " (a map's),
        "case 0 " or "default " (a switch's); `path` is the call's ("nodes[2]" for a model
        node's, "nodes[2].map.call", "nodes[2].switch.cases[0].call", ...)."""
        if not call.model:
            self.error(f"{where}: {prefix}call names no model", f"{path}.model")
            return
        if not _NAME.match(call.model):
            message = f"{where}: {prefix}model name '{call.model}' is invalid: {_NAME_RULE}"
            self.error(message, f"{path}.model")
        try:
            parse_selector(call.selector)
        except InvalidArgument as error:
            self.error(f"{where}: {prefix}{error.message}", f"{path}.selector")
        if call.stream:
            self.check_stream(where, prefix, f"{path}.stream", call)
        elif call.segment_delimiters:
            self.warn(f"{where}: {prefix}segment_delimiters is set, but stream is not segment")
        self.check_against_model(where, prefix, path, call)

    def check_stream(self, where: str, prefix: str, path: str, call: g.ModelCall) -> None:
        # The engine's rule: the consumer reads the stream of the one plain model node (a
        # model node not streaming from another itself) that its inputs reference; other
        # referenced nodes are waited for as usual.
        subject = f"{where}: {prefix}stream '{_STREAMS.get(call.stream, call.stream)}'"
        if prefix:
            self.error(f"{subject}: only model nodes stream, not a switch's or map's call", path)
            return
        named = referenced_nodes(text for _, text in sorted(call.inputs.items()))
        nodes = [n for n in self.graph.nodes if n.name in named]
        plain = [n for n in nodes if n.WhichOneof("kind") == "model" and not n.model.stream]
        if len(plain) > 1:
            names = " and ".join(f"'{n.name}'" for n in plain)
            self.error(f"{subject} reads one upstream, but its inputs reference {names}", path)
        elif not plain and not nodes:
            self.error(
                f"{subject} needs an input that references another node (the upstream)", path
            )
        elif not plain:
            what = ", ".join(f"'{n.name}' ({_kind_of(n)})" for n in nodes)
            self.error(
                f"{subject} needs a plain model node upstream, but its inputs reference {what}",
                path,
            )
        else:
            described = self.describe(plain[0].model.model)
            if described is not None and not described.streaming:
                self.warn(
                    f"{subject} reads '{plain[0].name}', but model '{plain[0].model.model}' "
                    "does not stream partial results, so it sees only the final result"
                )

    def check_against_model(self, where: str, prefix: str, path: str, call: g.ModelCall) -> None:
        if self.metadata is None:
            return
        try:
            described = self.describe(call.model)
        except Unchecked as why:
            message = f"{where}: model '{call.model}' could not be checked: {why}"
            if message not in self.report.warnings:
                self.warn(message)
            return
        if described is None:
            hint = did_you_mean(call.model, self.served)
            message = f"{where}: no worker serves model '{call.model}' yet{hint}"
            if message not in self.report.warnings:  # a switch may call one model twice
                self.warn(message)
            return
        takes = [spec.name for spec in described.inputs]
        if takes:  # a model that declares no inputs takes anything
            for name in sorted(call.inputs):
                if name not in takes:
                    self.error(
                        f"{where}: {prefix}model '{call.model}' takes no input '{name}' "
                        f"(it takes {', '.join(takes)})",
                        f"{path}.inputs.{name}",
                    )
            for spec in described.inputs:
                if spec.required and spec.name not in call.inputs:
                    self.error(
                        f"{where}: {prefix}model '{call.model}' needs input '{spec.name}', "
                        "which is not mapped",
                        f"{path}.inputs.{spec.name}",
                    )
            self.check_input_kinds(where, prefix, path, call, described)
        accepts = [spec.name for spec in described.parameters]
        for name in sorted(call.parameters):
            if accepts and name not in accepts:
                self.error(
                    f"{where}: {prefix}model '{call.model}' has no parameter '{name}' "
                    f"(it accepts {', '.join(accepts)})",
                    f"{path}.parameters.{name}",
                )

    def check_input_kinds(
        self,
        where: str,
        prefix: str,
        path: str,
        call: g.ModelCall,
        described: GetModelMetadataResponse,
    ) -> None:
        """A graph input wired whole to a model input has a kind that input takes."""
        takes = {spec.name: kind_of_value_kind(spec.kind) or "any" for spec in described.inputs}
        for name, text in sorted(call.inputs.items()):
            ref = parsed_or_none(text)
            if ref is None or ref.kind != "input" or ref.path or name not in takes:
                continue
            given = self.input_kinds.get(ref.name, "any")
            if not can_feed(given, takes[name]):
                self.error(
                    f"{where}: {prefix}input '{name}' is graph input '{ref.name}' "
                    f"({a_kind(given)}), but model '{call.model}' takes {a_kind(takes[name])}",
                    f"{path}.inputs.{name}",
                )

    def missing_field(self, name: str, field: str) -> str:
        """Why model node `name` has no output `field`, or "" when it has (or may have) it."""
        node = self.nodes.get(name)
        if node is None or node.WhichOneof("kind") != "model":
            return ""
        try:
            described = self.describe(node.model.model)
        except Unchecked:  # reported where the node's call is checked
            return ""
        fields = outputs_of(node, described)
        if not fields or field in fields:
            return ""
        known = did_you_mean(field, fields) or f" (its outputs: {', '.join(fields)})"
        return f"node '{name}' (model '{node.model.model}') has no output '{field}'{known}"

    def describe(self, model: str) -> GetModelMetadataResponse | None:
        # Cached: the callable may ask a worker, and one model is often called many times.
        if self.metadata is None:
            return None
        if model not in self._described:
            try:
                self._described[model] = self.metadata(model)
            except Unchecked as why:
                self._described[model] = why
        found = self._described[model]
        if isinstance(found, Unchecked):
            raise found
        return found

    def check_map(self, where: str, path: str, node: g.MapNode) -> None:
        if not node.over:
            self.error(f"{where}: map needs 'over', a reference to the list", f"{path}.over")
        if node.concurrency < 0:
            message = f"{where}: concurrency must be 0 or more (0: 8), got {node.concurrency}"
            self.error(message, f"{path}.concurrency")
        if not node.HasField("call"):
            message = f"{where}: map has no call (the model called for each element)"
            self.error(message, f"{path}.call")
            return
        self.check_call(where, "call ", f"{path}.call", node.call)
        if not any(_is_item(text) for text in node.call.inputs.values()):
            self.warn(
                f"{where}: the call never references 'item', so every element gets the same inputs"
            )

    def check_switch(self, where: str, path: str, node: g.SwitchNode) -> None:
        if not node.cases:
            self.error(f"{where}: switch has no cases", f"{path}.cases")
        for i, case in enumerate(node.cases):
            at = f"{path}.cases[{i}]"
            if case.HasField("when"):
                self.check_condition(f"{where}: case {i}", f"{at}.when", case.when)
            else:
                self.error(f"{where}: case {i} has no condition ('when')", f"{at}.when")
            if case.HasField("call"):
                self.check_call(where, f"case {i} ", f"{at}.call", case.call)
            else:
                self.error(f"{where}: case {i} has no call", f"{at}.call")
        if node.HasField("default"):
            self.check_call(where, "default ", f"{path}.default", node.default)

    def check_condition(self, where: str, path: str, condition: g.Condition) -> None:
        if not condition.value:
            self.error(f"{where} condition names no value", f"{path}.value")
        if condition.op not in CONDITION_OPS:
            self.error(f"{where} {_unnamed('op', CONDITION_OPS.names, condition.op)}", f"{path}.op")
        operand = condition.operand.WhichOneof("kind")
        if operand is None:
            self.error(f"{where} condition has no operand", f"{path}.operand")
        elif condition.op in (g.CONDITION_OP_IN, g.CONDITION_OP_NOT_IN) and operand != "list_value":
            message = f"{where} op '{CONDITION_OPS.name(condition.op)}' needs a list operand"
            self.error(message, f"{path}.operand")

    def check_aggregate(self, where: str, path: str, node: g.AggregateNode) -> None:
        if node.method not in AGGREGATE_METHODS:
            message = f"{where}: {_unnamed('method', AGGREGATE_METHODS.names, node.method)}"
            self.error(message, f"{path}.method")
        if not node.values:
            self.error(f"{where}: aggregate has no values", f"{path}.values")
        if node.weights and len(node.weights) != len(node.values):
            message = f"{where}: {len(node.weights)} weights for {len(node.values)} values"
            self.error(message, f"{path}.weights")
        if node.weights and node.method != g.AGGREGATE_METHOD_WEIGHTED_AVERAGE:
            self.warn(f"{where}: weights are used by weighted_average only")

    def check_outputs(self) -> None:
        if not self.graph.outputs:
            self.error("graph has no outputs", "outputs")
        for name, text in sorted(self.graph.outputs.items()):
            self.check_ref(f"output '{name}'", f"outputs.{name}", text)

    def check_unused(self) -> None:
        for item in self.graph.inputs:
            if item.name and f"inputs.{item.name}" not in self.used:
                self.warn(f"input '{item.name}' is not used")
        for node in self.graph.nodes:
            if node.name and node.name not in self.used:
                self.warn(f"node '{node.name}': nothing uses its outputs")


def _default_problem(item: g.GraphInput) -> str:
    try:
        default = from_value(item.default)
    except InvalidArgument as error:  # a Value with no kind set, from the wire
        return f"input '{item.name}': default: {error.message}"
    kind = kind_of_value_kind(item.kind)
    if default is None or kind is None:  # null fits every kind: "not given"
        return ""
    try:
        check_value("default of input", Field(item.name, kind), default)
    except InvalidArgument as error:
        return error.message
    return ""


def _unnamed(what: str, names: Sequence[str], value: int) -> str:
    """Why an enum field holds no value it may hold: unset, or a number no name has."""
    listed = ", ".join(names)
    if value == 0:
        return f"{what} is not set (give one of {listed})"
    return f"{what} {value} is not one of {listed}"


def _kind_of(node: g.Node) -> str:
    kind = node.WhichOneof("kind")
    if kind == "model":
        return "a model node that streams itself"
    return {"map": "a map node", "switch": "a switch node", "aggregate": "an aggregate node"}.get(
        kind or "", "a node with no kind"
    )


def _is_item(text: str) -> bool:
    ref = parsed_or_none(text)
    return ref is not None and ref.kind == "item"
