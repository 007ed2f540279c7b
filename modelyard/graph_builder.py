"""Build a graph in Python; `build()` returns the same proto as the equivalent YAML file.

    g = GraphBuilder("inference-graph")
    prompt = g.input("prompt", "string")
    gen1 = g.model("gen1", "gpt2", text=prompt, parameters={"max_new_tokens": 16})
    gen2 = g.model("gen2", "distilgpt2", text=prompt)
    texts = g.aggregate("texts", "list", [gen1["text"], gen2["text"]])
    scores = g.map("scores", over=texts["value"], model="bert", inputs={"text": g.item})
    g.output("scores", scores["results"])
    graph = g.build()

Handles turn into reference strings: `prompt` is "inputs.prompt", `gen1` the node's whole
outputs, `gen1["text"]` "gen1.text", `g.item` the element inside a map. A plain string is
taken as a reference as is. Model inputs go as keyword arguments, or in `inputs=` when an
input's name clashes with an argument (e.g. an input called "selector").

Kinds, ops and methods go by their names in graph files ("string", "==", "majority_vote",
or a proto name such as "CONDITION_OP_EQ"; see `modelyard.enum_names`). Apart from an
unknown name, which raises InvalidArgument at once (the proto has no room for it), the
builder checks nothing: the composer does when the graph is validated, deployed or run
(`ComposerClient.validate` reports every problem at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from modelyard.enum_names import (
    AGGREGATE_METHODS,
    CONDITION_OPS,
    STREAM_MODES,
    VALUE_KINDS,
    EnumNames,
)
from modelyard.errors import InvalidArgument
from modelyard.times import duration
from modelyard.v1 import graph_pb2 as g
from modelyard.values import to_value


class ValueRef:
    """A value a node can read; indexing goes one field or list index deeper."""

    __slots__ = ("ref",)

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __getitem__(self, field: str | int) -> ValueRef:
        return ValueRef(f"{self.ref}.{field}")

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ref!r})"


class InputRef(ValueRef):
    """A graph input."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(f"inputs.{name}")
        self.name = name


class NodeRef(ValueRef):
    """A node's whole outputs map."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


Source = ValueRef | str
Stream = Literal["chunk", "segment"] | None
_NO_DEFAULT: Any = object()
E = TypeVar("E", bound=int)


class GraphBuilder:
    """Collects inputs, nodes and outputs in the order given; `build()` copies them out."""

    def __init__(self, name: str, description: str = "") -> None:
        self._graph = g.Graph(name=name, description=description)
        self.item = ValueRef("item")

    def input(
        self,
        name: str,
        kind: str = "any",
        *,
        required: bool | None = None,
        default: Any = _NO_DEFAULT,
    ) -> InputRef:
        """A graph input; like the file form, it is required unless it has a default."""
        item = self._graph.inputs.add(name=name, kind=_enum(VALUE_KINDS, kind, "kind"))
        item.required = default is _NO_DEFAULT if required is None else required
        if default is not _NO_DEFAULT:
            item.default.CopyFrom(to_value(default))
        return InputRef(name)

    def call(
        self,
        model: str,
        /,
        *,
        inputs: Mapping[str, Source] | None = None,
        parameters: Mapping[str, Any] | None = None,
        selector: str = "",
        stream: Stream = None,
        segment_delimiters: str = "",
        **refs: Source,
    ) -> g.ModelCall:
        """A model call for `switch` cases and defaults."""
        return _call(model, _merge(inputs, refs), parameters, selector, stream, segment_delimiters)

    def model(
        self,
        name: str,
        model: str,
        /,
        *,
        inputs: Mapping[str, Source] | None = None,
        parameters: Mapping[str, Any] | None = None,
        selector: str = "",
        stream: Stream = None,
        segment_delimiters: str = "",
        optional: bool = False,
        timeout: float = 0.0,
        retries: int = 0,
        hedge_after: float = 0.0,
        **refs: Source,
    ) -> NodeRef:
        """A node calling one model."""
        node = self._node(name, optional, timeout, retries, hedge_after)
        call = _call(model, _merge(inputs, refs), parameters, selector, stream, segment_delimiters)
        node.model.CopyFrom(call)
        return NodeRef(name)

    def map(
        self,
        name: str,
        /,
        *,
        over: Source,
        model: str,
        inputs: Mapping[str, Source] | None = None,
        parameters: Mapping[str, Any] | None = None,
        selector: str = "",
        concurrency: int = 0,
        optional: bool = False,
        timeout: float = 0.0,
        retries: int = 0,
        hedge_after: float = 0.0,
        **refs: Source,
    ) -> NodeRef:
        """A node calling `model` once per element of `over`; `g.item` is the element."""
        node = self._node(name, optional, timeout, retries, hedge_after)
        node.map.over = str(over)
        node.map.concurrency = concurrency
        node.map.call.CopyFrom(_call(model, _merge(inputs, refs), parameters, selector))
        return NodeRef(name)

    def when(self, value: Source, op: str, operand: Any) -> g.Condition:
        """A switch condition, e.g. `g.when(cls["label"], "==", "POSITIVE")`."""
        return g.Condition(
            value=str(value), op=_enum(CONDITION_OPS, op, "op"), operand=to_value(operand)
        )

    def switch(
        self,
        name: str,
        /,
        *,
        cases: Sequence[tuple[g.Condition, g.ModelCall]],
        default: g.ModelCall | None = None,
        optional: bool = False,
        timeout: float = 0.0,
        retries: int = 0,
        hedge_after: float = 0.0,
    ) -> NodeRef:
        """A node running the first case whose condition holds, else `default`."""
        node = self._node(name, optional, timeout, retries, hedge_after)
        node.switch.SetInParent()
        for condition, call in cases:
            node.switch.cases.add(when=condition, call=call)
        if default is not None:
            node.switch.default.CopyFrom(default)
        return NodeRef(name)

    def aggregate(
        self,
        name: str,
        method: str,
        values: Sequence[Source],
        /,
        *,
        weights: Sequence[float] = (),
        optional: bool = False,
        timeout: float = 0.0,
        retries: int = 0,
    ) -> NodeRef:
        """A node combining values: majority_vote, weighted_average, concat, collect or list."""
        node = self._node(name, optional, timeout, retries)
        node.aggregate.method = _enum(AGGREGATE_METHODS, method, "aggregate method")
        node.aggregate.values.extend(str(value) for value in values)
        node.aggregate.weights.extend(weights)
        return NodeRef(name)

    def output(self, name: str, value: Source) -> None:
        self._graph.outputs[name] = str(value)

    def build(self) -> g.Graph:
        graph = g.Graph()
        graph.CopyFrom(self._graph)  # a copy: building more must not change this one
        return graph

    def _node(
        self, name: str, optional: bool, timeout: float, retries: int, hedge_after: float = 0.0
    ) -> g.Node:
        """`timeout` and `hedge_after` in seconds, 0 for none."""
        node = self._graph.nodes.add(name=name, optional=optional, retries=retries)
        if timeout:
            node.timeout.CopyFrom(duration(timeout))
        if hedge_after:
            node.hedge_after.CopyFrom(duration(hedge_after))
        return node


def _enum(names: EnumNames[E], given: str, what: str) -> E:
    """The enum value `given` names."""
    found = names.parse(given)
    if found is None:
        raise InvalidArgument(
            f"unknown {what} {given!r}{names.did_you_mean(given)}; "
            f"use one of {', '.join(names.names)}"
        )
    return found


def _merge(inputs: Mapping[str, Source] | None, refs: Mapping[str, Source]) -> dict[str, str]:
    both = set(inputs or {}) & set(refs)
    if both:
        raise TypeError(f"input {sorted(both)[0]!r} given both in inputs= and as a keyword")
    return {key: str(ref) for key, ref in {**(inputs or {}), **refs}.items()}


def _call(
    model: str,
    inputs: Mapping[str, str],
    parameters: Mapping[str, Any] | None,
    selector: str,
    stream: Stream = None,
    segment_delimiters: str = "",
) -> g.ModelCall:
    call = g.ModelCall(model=model, inputs=inputs, selector=selector)
    call.stream = STREAM_MODES.value(stream or "none")
    call.segment_delimiters = segment_delimiters
    for key, value in (parameters or {}).items():
        call.parameters[key].CopyFrom(to_value(value))
    return call
