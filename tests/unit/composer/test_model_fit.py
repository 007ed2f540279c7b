"""Validation against the models' signatures: references to output fields a model does not
have, graph inputs whose kind cannot feed the model input they are wired to, and a
did-you-mean for a model nobody serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from composer.spec import graph_from_dict
from composer.validation import Unchecked, validate
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import predict_pb2 as p
from modelyard.v1 import value_pb2 as v

Lookup = Callable[[str], p.GetModelMetadataResponse | None]


def spec(name: str, kind: v.ValueKind.ValueType = v.VALUE_KIND_STRING) -> p.FieldSpec:
    return p.FieldSpec(name=name, kind=kind, required=True)


SERVED = {
    "sentiment": p.GetModelMetadataResponse(
        inputs=[spec("text")], outputs=[spec("label"), spec("score", v.VALUE_KIND_FLOAT)]
    ),
    "gpt2": p.GetModelMetadataResponse(inputs=[spec("text")], outputs=[spec("text")]),
    "scale": p.GetModelMetadataResponse(
        inputs=[spec("factor", v.VALUE_KIND_FLOAT), spec("values", v.VALUE_KIND_TENSOR)],
        outputs=[spec("values", v.VALUE_KIND_TENSOR)],
    ),
    "anything": p.GetModelMetadataResponse(inputs=[spec("text")]),  # declares no outputs
}


def served(model: str) -> p.GetModelMetadataResponse | None:
    return SERVED.get(model)


def unserved(model: str) -> p.GetModelMetadataResponse | None:
    return None


def unchecked(model: str) -> p.GetModelMetadataResponse | None:
    raise Unchecked("w1 answered UNAVAILABLE")


def graph(*nodes: dict[str, Any], inputs: Any = None, **outputs: str) -> g.Graph:
    return graph_from_dict(
        {
            "name": "t",
            "inputs": inputs or {"text": "string"},
            "nodes": list(nodes),
            "outputs": outputs or {n["name"]: n["name"] for n in nodes},
        }
    )


def mood(text: str = "inputs.text") -> dict[str, Any]:
    return {"name": "s", "model": "sentiment", "inputs": {"text": text}}


def test_a_misspelt_output_field_is_refused_with_a_did_you_mean() -> None:
    report = validate(graph(mood(), label="s.lable"), served)
    assert report.errors == [
        "output 'label' references 's.lable', but node 's' (model 'sentiment') has no "
        "output 'lable' (did you mean 'label'?)"
    ]


def test_an_unknown_field_with_no_near_miss_lists_the_outputs() -> None:
    report = validate(graph(mood(), x="s.verdict"), served)
    assert report.errors == [
        "output 'x' references 's.verdict', but node 's' (model 'sentiment') has no output "
        "'verdict' (its outputs: label, score)"
    ]


def test_field_references_in_node_inputs_are_checked_too() -> None:
    gen = {"name": "gen", "model": "gpt2", "inputs": {"text": "inputs.text"}}
    report = validate(graph(gen, mood("gen.txt"), out="s"), served)
    assert report.errors == [
        "node 's': input 'text' references 'gen.txt', but node 'gen' (model 'gpt2') has no "
        "output 'txt' (did you mean 'text'?)"
    ]


@pytest.mark.parametrize(
    "lookup",
    [served, unserved, unchecked],  # the last two: a warning, and no field check
)
def test_fields_that_exist_or_cannot_be_known_pass(lookup: Lookup) -> None:
    nodes = [mood(), {"name": "a", "model": "anything", "inputs": {"text": "inputs.text"}}]
    outputs = {"label": "s.label", "deep": "s.label.0", "whole": "s", "free": "a.whatever"}
    assert validate(graph(*nodes, **outputs), lookup).errors == []


def test_stream_fields_are_not_checked() -> None:
    # A stream consumer reads its upstream's chunks, whose fields no signature declares
    # (a ticker streams `tick` and returns `ticks`), and its own outputs are the engine's.
    gen = {"name": "gen", "model": "gpt2", "inputs": {"text": "inputs.text"}}
    consumer = {**mood("gen.chunk_field"), "stream": "chunk"}
    streamed = graph(gen, consumer, text="gen.text", moods="s.results")
    assert validate(streamed, served).errors == []
    assert validate(graph(gen, consumer, text="gen.txt"), served).errors == [
        "output 'text' references 'gen.txt', but node 'gen' (model 'gpt2') has no output "
        "'txt' (did you mean 'text'?)"
    ]


def test_a_graph_input_of_the_wrong_kind_is_refused() -> None:
    report = validate(graph(mood(), inputs={"text": "int"}), served)
    assert report.errors == [
        "node 's': input 'text' is graph input 'text' (an integer), but model 'sentiment' "
        "takes a string"
    ]


def test_the_kind_check_covers_map_and_switch_calls() -> None:
    call = {"model": "sentiment", "inputs": {"text": "inputs.n"}}
    mapped = {"name": "m", "map": {"over": "inputs.texts", "call": call}}
    report = validate(graph(mapped, inputs={"texts": "list", "n": "int"}), served)
    assert report.errors == [
        "node 'm': call input 'text' is graph input 'n' (an integer), but model 'sentiment' "
        "takes a string"
    ]


@pytest.mark.parametrize(
    ("kinds", "wired"),
    [
        ({"f": "int", "t": "list"}, {"factor": "inputs.f", "values": "inputs.t"}),  # widened
        ({"f": "float", "t": "tensor"}, {"factor": "inputs.f", "values": "inputs.t"}),
        ({"f": "any", "t": "any"}, {"factor": "inputs.f", "values": "inputs.t"}),
        ({"m": "map"}, {"factor": "inputs.m.f", "values": "inputs.m.t"}),  # fields: unknown
    ],
    ids=["int-to-float-list-to-tensor", "same", "any", "a-field-of-an-input"],
)
def test_kinds_that_can_feed_the_input_pass(kinds: dict[str, str], wired: dict[str, str]) -> None:
    node = {"name": "x", "model": "scale", "inputs": wired}
    assert validate(graph(node, inputs=kinds), served).errors == []


def test_an_unserved_model_warns_with_a_did_you_mean_among_served_models() -> None:
    typo = graph({**mood(), "model": "sentimnt"})
    report = validate(typo, served, served=["gpt2", "sentiment", "scale"])
    assert report.errors == []
    assert report.warnings == [
        "node 's': no worker serves model 'sentimnt' yet (did you mean 'sentiment'?)"
    ]
    far = validate(graph({**mood(), "model": "translator"}), served, served=["sentiment"])
    assert far.warnings == ["node 's': no worker serves model 'translator' yet"]
