"""A graph in its file form: plain mappings and lists, as YAML or JSON files hold them.

The form is the Graph proto's JSON shape with snake_case field names, plus conveniences
so that files (and dicts written in code) read naturally:

    name: example
    inputs:
      prompt: string                       # name -> kind (required: it has no default)
      labels: {kind: list, default: [a, b]}  # name -> {kind, required, default}
    nodes:
      - name: gen                          # the node's kind is the key present
        model: gpt2                        # shorthand: the call's keys sit beside it
        inputs: {text: inputs.prompt}
        parameters: {max_new_tokens: 16}   # plain values, not Value messages
        timeout: 2.5                       # seconds (or a proto duration: "2.5s")
        hedge_after: 0.5                   # a second replica after 0.5 s without an answer
      - name: mood                         # the nested form of a model call
        model: {model: sentiment, inputs: {text: gen.text}, stream: segment}
      - name: each                         # one call per element; `item` is the element
        map: {over: inputs.labels, call: {model: bert, inputs: {text: item}}}
      - name: reply
        switch:
          cases:
            - when: {value: each.results.0.label, op: "==", operand: POSITIVE}
              call: {model: gpt2, inputs: {text: inputs.prompt}}
          default: {model: distilgpt2, inputs: {text: inputs.prompt}}
      - name: both
        aggregate: {method: collect, values: [mood, reply]}
    outputs: {text: gen.text, both: both.value}

`inputs` may also be the proto's list of {name, kind, required, default}. In every form
an input is required unless it has a `default`, and `kind` defaults to "any". Enums go by
the names in `modelyard.enum_names`: a kind "string", an op "==" (or "eq"), a method
"majority_vote", a stream "chunk", "segment" or "none", or any enum value's proto name
("VALUE_KIND_STRING"); files are written with the first of these. Null means "not given"
everywhere except `default` and a condition's `operand`, where it is the value null.

This module checks the shape only (unknown keys, wrong types, names no enum value has):
anything the proto can hold, even a graph that cannot run, parses, and the composer's
validation (ValidateGraph, DeployGraph) then reports every problem at once, the same way
for files and for graphs built in code. It lives in the client core, without a YAML
parser, so that a client app can hand `ComposerClient` a dict; reading and writing the
files is `composer.spec`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration

from modelyard.enum_names import (
    AGGREGATE_METHODS,
    CONDITION_OPS,
    STREAM_MODES,
    VALUE_KINDS,
    EnumNames,
)
from modelyard.errors import InvalidArgument, Reason
from modelyard.times import duration, seconds
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import value_pb2
from modelyard.values import from_value, to_value

E = TypeVar("E", bound=int)
_KINDS = ("model", "map", "switch", "aggregate")
_CALL_KEYS = ("model", "inputs", "parameters", "selector", "stream", "segment_delimiters")
_NODE_KEYS = ("name", *_KINDS, "optional", "timeout", "retries", "hedge_after")
_INPUT_KEYS = ("kind", "required", "default")


# --- reading --------------------------------------------------------------------------


def graph_from_dict(data: Mapping[str, Any]) -> g.Graph:
    """Builds a Graph from its file form; raises InvalidArgument (GRAPH_INVALID, as the
    composer's validation does) naming the bad key."""
    try:
        return _graph(data)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, reason=Reason.GRAPH_INVALID) from None


def _graph(data: Mapping[str, Any]) -> g.Graph:
    f = _Fields("graph", data, ("name", "description", "inputs", "nodes", "outputs"))
    graph = g.Graph(name=f.string("name"), description=f.string("description"))
    graph.inputs.extend(_inputs(f.get("inputs")))
    graph.nodes.extend(_node(i, node) for i, node in enumerate(f.sequence("nodes")))
    graph.outputs.update(_references("graph: outputs", f.mapping("outputs")))
    return graph


def _inputs(raw: Any) -> list[g.GraphInput]:
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        inputs = []
        for name, spec in raw.items():
            if not isinstance(name, str):
                # YAML 1.1 reads unquoted yes/no/on/off keys as booleans.
                raise InvalidArgument(f"inputs: input names are strings, got {name!r} (quote it)")
            where = f"input {name!r}"
            if isinstance(spec, str):
                spec = {"kind": spec}
            inputs.append(_input(where, name, _Fields(where, spec, _INPUT_KEYS)))
        return inputs
    if isinstance(raw, list):
        inputs = []
        for i, spec in enumerate(raw):
            name = spec.get("name") if isinstance(spec, Mapping) else None
            where = f"input {name!r}" if isinstance(name, str) else f"input at position {i}"
            f = _Fields(where, spec, ("name", *_INPUT_KEYS))
            inputs.append(_input(where, f.string("name"), f))
        return inputs
    raise InvalidArgument(f"graph: 'inputs' must be a mapping or a list, got {kind_of(raw)}")


def _input(where: str, name: str, f: _Fields) -> g.GraphInput:
    has_default = "default" in f.data
    required = f.flag("required", default=not has_default)
    kind = f.enum("kind", VALUE_KINDS, default=value_pb2.VALUE_KIND_ANY)
    item = g.GraphInput(name=name, kind=kind, required=required)
    if has_default:
        item.default.CopyFrom(_value(where, "default", f.data["default"]))
    return item


def _node(position: int, data: Any) -> g.Node:
    name = data.get("name") if isinstance(data, Mapping) else None
    where = f"node {name!r}" if isinstance(name, str) and name else f"node at position {position}"
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping, got {kind_of(data)}")
    kinds = [kind for kind in _KINDS if data.get(kind) is not None]
    if len(kinds) > 1:
        raise InvalidArgument(f"{where}: has both '{kinds[0]}' and '{kinds[1]}'; pick one kind")
    shorthand = kinds == ["model"] and isinstance(data["model"], str)
    if not shorthand:
        for key in _CALL_KEYS[1:]:
            if key in data:
                raise InvalidArgument(
                    f"{where}: unknown key '{key}' here: it belongs to a model call, beside "
                    "'model: <name>' or inside the call's mapping"
                )
    f = _Fields(where, data, _NODE_KEYS + (_CALL_KEYS[1:] if shorthand else ()))
    node = g.Node(name=f.string("name"), optional=f.flag("optional"), retries=f.integer("retries"))
    if timeout := f.seconds("timeout"):
        node.timeout.CopyFrom(duration(timeout))
    if hedge_after := f.seconds("hedge_after"):
        node.hedge_after.CopyFrom(duration(hedge_after))
    kind = kinds[0] if kinds else None
    if shorthand:
        _set(node.model, _call(where, {k: data[k] for k in _CALL_KEYS if k in data}))
    elif kind == "model":
        _set(node.model, _call(f"{where}, model", data["model"]))
    elif kind == "map":
        _set(node.map, _map(f"{where}, map", data["map"]))
    elif kind == "switch":
        _set(node.switch, _switch(f"{where}, switch", data["switch"]))
    elif kind == "aggregate":
        _set(node.aggregate, _aggregate(f"{where}, aggregate", data["aggregate"]))
    return node


def _call(where: str, data: Any) -> g.ModelCall:
    f = _Fields(where, data, _CALL_KEYS)
    call = g.ModelCall(
        model=f.string("model"),
        selector=f.string("selector"),
        stream=_stream(where, f.get("stream")),
        segment_delimiters=f.string("segment_delimiters"),
    )
    call.inputs.update(_references(f"{where}: inputs", f.mapping("inputs")))
    for key, value in _string_keys(f"{where}: parameters", f.mapping("parameters")).items():
        call.parameters[key].CopyFrom(_value(where, f"parameter {key!r}", value))
    return call


def _stream(where: str, value: Any) -> g.StreamMode.ValueType:
    if value is None:
        return g.STREAM_MODE_UNSPECIFIED
    if isinstance(value, str) and (mode := STREAM_MODES.parse(value)) is not None:
        return mode
    raise InvalidArgument(f"{where}: 'stream' must be chunk, segment or none, got {value!r}")


def _map(where: str, data: Any) -> g.MapNode:
    f = _Fields(where, data, ("over", "call", "concurrency"))
    node = g.MapNode(over=f.string("over"), concurrency=f.integer("concurrency"))
    if f.get("call") is not None:
        _set(node.call, _call(f"{where} call", f.get("call")))
    return node


def _switch(where: str, data: Any) -> g.SwitchNode:
    f = _Fields(where, data, ("cases", "default"))
    node = g.SwitchNode()
    for i, raw in enumerate(f.sequence("cases")):
        case_where = f"{where} case {i}"
        case = _Fields(case_where, raw, ("when", "call"))
        item = node.cases.add()
        if case.get("when") is not None:
            _set(item.when, _condition(f"{case_where} when", case.get("when")))
        if case.get("call") is not None:
            _set(item.call, _call(f"{case_where} call", case.get("call")))
    if f.get("default") is not None:
        _set(node.default, _call(f"{where} default", f.get("default")))
    return node


def _condition(where: str, data: Any) -> g.Condition:
    f = _Fields(where, data, ("value", "op", "operand"))
    op = f.enum("op", CONDITION_OPS, default=g.CONDITION_OP_UNSPECIFIED)
    condition = g.Condition(value=f.string("value"), op=op)
    if "operand" in f.data:  # null is a real operand here ("== null")
        condition.operand.CopyFrom(_value(where, "operand", f.data["operand"]))
    return condition


def _aggregate(where: str, data: Any) -> g.AggregateNode:
    f = _Fields(where, data, ("method", "values", "weights"))
    method = f.enum("method", AGGREGATE_METHODS, default=g.AGGREGATE_METHOD_UNSPECIFIED)
    node = g.AggregateNode(method=method)
    for i, value in enumerate(f.sequence("values")):
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: value {i} must be a reference, got {kind_of(value)}")
        node.values.append(value)
    for i, weight in enumerate(f.sequence("weights")):
        if not _is_number(weight):
            raise InvalidArgument(f"{where}: weight {i} must be a number, got {kind_of(weight)}")
        node.weights.append(float(weight))
    return node


def _set(field: Any, message: Any) -> None:
    # SetInParent marks the oneof member present even when `message` is empty, so a node
    # written `map: {}` stays a (broken) map node that validation can name.
    field.SetInParent()
    field.MergeFrom(message)


def _references(where: str, data: Mapping[str, Any]) -> dict[str, str]:
    refs = _string_keys(where, data)
    for key, value in refs.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: {key!r} must be a reference, got {kind_of(value)}")
    return refs


def _string_keys(where: str, data: Mapping[Any, Any]) -> dict[str, Any]:
    for key in data:
        if not isinstance(key, str):
            raise InvalidArgument(f"{where}: keys are strings, got {key!r} (quote it)")
    return dict(data)


def _value(where: str, what: str, obj: Any) -> value_pb2.Value:
    try:
        return to_value(obj)
    except TypeError as error:  # e.g. a YAML date, which has no Value form
        raise InvalidArgument(f"{where}: {what}: {error}") from None


class _Fields:
    """One mapping of the file with typed getters; rejects keys it does not know."""

    def __init__(self, where: str, data: Any, known: Iterable[str]) -> None:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"{where}: must be a mapping, got {kind_of(data)}")
        known = tuple(known)
        for key in data:
            if key not in known:
                raise InvalidArgument(f"{where}: unknown key {_show(key)}{_hint(key, known)}")
        self.where = where
        self.data: Mapping[str, Any] = data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def _typed(self, key: str, ok: bool, expected: str) -> Any:
        value = self.data[key]
        if not ok:
            raise InvalidArgument(f"{self.where}: '{key}' must be {expected}, got {kind_of(value)}")
        return value

    def string(self, key: str, default: str = "") -> str:
        value = self.get(key)
        if value is None:
            return default
        return str(self._typed(key, isinstance(value, str), "a string"))

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        return bool(self._typed(key, isinstance(value, bool), "true or false"))

    def integer(self, key: str) -> int:
        value = self.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool)
        return 0 if value is None else int(self._typed(key, ok, "an integer"))

    def seconds(self, key: str) -> float:
        """A span: a number of seconds, or a proto JSON duration such as "2.5s"."""
        value = self.get(key)
        if value is None:
            return 0.0
        if isinstance(value, str):
            span = Duration()
            try:
                span.FromJsonString(value)
            except ValueError:
                pass
            else:
                return seconds(span)
        ok = _is_number(value) and math.isfinite(value)
        return float(self._typed(key, ok, 'a number of seconds (or a duration such as "2.5s")'))

    def enum(self, key: str, names: EnumNames[E], *, default: E) -> E:
        """One of an enum's values, by any of its names (see `modelyard.enum_names`)."""
        value = self.get(key)
        if value is None:
            return default
        found = names.parse(value) if isinstance(value, str) else None
        if found is None:
            raise InvalidArgument(
                f"{self.where}: '{key}' must be one of {', '.join(names.names)}, "
                f"got {kind_of(value)}{names.did_you_mean(str(value))}"
            )
        return found

    def mapping(self, key: str) -> Mapping[Any, Any]:
        value = self.get(key)
        return {} if value is None else self._typed(key, isinstance(value, Mapping), "a mapping")

    def sequence(self, key: str) -> list[Any]:
        value = self.get(key)
        return [] if value is None else self._typed(key, isinstance(value, list), "a list")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def kind_of(value: Any) -> str:
    """How an error message names what it got: "a list", "an integer", "a string ('x')"."""
    if value is None:
        return "null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    for cls, name in names.items():
        if type(value) is cls:
            return f"{name} ({value!r})" if cls is str else name
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _show(key: Any) -> str:
    return f"'{key}'" if isinstance(key, str) else repr(key)


def _hint(key: Any, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected: {', '.join(known)})"


# --- writing --------------------------------------------------------------------------


def graph_to_dict(graph: g.Graph) -> dict[str, Any]:
    """The canonical file form: proto shape, empty fields left out, maps sorted by key
    (proto maps have no order, and sorted dumps diff well)."""
    data: dict[str, Any] = {"name": graph.name}
    if graph.description:
        data["description"] = graph.description
    if graph.inputs:
        data["inputs"] = [_input_to_dict(item) for item in graph.inputs]
    if graph.nodes:
        data["nodes"] = [_node_to_dict(node) for node in graph.nodes]
    if graph.outputs:
        data["outputs"] = dict(sorted(graph.outputs.items()))
    return data


def _input_to_dict(item: g.GraphInput) -> dict[str, Any]:
    data: dict[str, Any] = {"name": item.name, "kind": VALUE_KINDS.name(item.kind)}
    has_default = item.HasField("default")
    if item.required == has_default:  # differs from what the file form assumes
        data["required"] = item.required
    if has_default:
        data["default"] = from_value(item.default)
    return data


def _node_to_dict(node: g.Node) -> dict[str, Any]:
    data: dict[str, Any] = {"name": node.name}
    kind = node.WhichOneof("kind")
    if kind == "model":
        data.update(_call_to_dict(node.model))  # the shorthand: call keys beside the node's
    elif kind == "map":
        data["map"] = _map_to_dict(node.map)
    elif kind == "switch":
        data["switch"] = _switch_to_dict(node.switch)
    elif kind == "aggregate":
        data["aggregate"] = _aggregate_to_dict(node.aggregate)
    if node.optional:
        data["optional"] = True
    if timeout := seconds(node.timeout):
        data["timeout"] = timeout
    if node.retries:
        data["retries"] = node.retries
    if hedge_after := seconds(node.hedge_after):
        data["hedge_after"] = hedge_after
    return data


def _call_to_dict(call: g.ModelCall) -> dict[str, Any]:
    data: dict[str, Any] = {"model": call.model}
    if call.inputs:
        data["inputs"] = dict(sorted(call.inputs.items()))
    if call.parameters:
        data["parameters"] = {k: from_value(v) for k, v in sorted(call.parameters.items())}
    if call.selector:
        data["selector"] = call.selector
    if call.stream:
        data["stream"] = STREAM_MODES.name(call.stream)
    if call.segment_delimiters:
        data["segment_delimiters"] = call.segment_delimiters
    return data


def _map_to_dict(node: g.MapNode) -> dict[str, Any]:
    data: dict[str, Any] = {"over": node.over}
    if node.HasField("call"):
        data["call"] = _call_to_dict(node.call)
    if node.concurrency:
        data["concurrency"] = node.concurrency
    return data


def _switch_to_dict(node: g.SwitchNode) -> dict[str, Any]:
    cases = []
    for case in node.cases:
        item: dict[str, Any] = {}
        if case.HasField("when"):
            item["when"] = {"value": case.when.value, "op": CONDITION_OPS.name(case.when.op)}
            if case.when.HasField("operand"):
                item["when"]["operand"] = from_value(case.when.operand)
        if case.HasField("call"):
            item["call"] = _call_to_dict(case.call)
        cases.append(item)
    data: dict[str, Any] = {"cases": cases}
    if node.HasField("default"):
        data["default"] = _call_to_dict(node.default)
    return data


def _aggregate_to_dict(node: g.AggregateNode) -> dict[str, Any]:
    method = AGGREGATE_METHODS.name(node.method)
    data: dict[str, Any] = {"method": method, "values": list(node.values)}
    if node.weights:
        data["weights"] = list(node.weights)
    return data
