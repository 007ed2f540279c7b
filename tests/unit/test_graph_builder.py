"""The Python builder produces exactly the proto that the equivalent YAML file does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from composer.spec import load_graph
from composer.validation import Report, validate
from modelyard.errors import InvalidArgument
from modelyard.graph_builder import GraphBuilder, InputRef, NodeRef, ValueRef
from modelyard.graph_spec import graph_from_dict
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import value_pb2 as v
from modelyard.values import from_value

GRAPHS = Path(__file__).parents[2] / "examples" / "graphs"


def test_inference_graph_matches_its_yaml() -> None:
    g_ = GraphBuilder(
        "inference-graph",
        description="gpt2 and distilgpt2 complete one prompt in parallel; bert scores each text.",
    )
    prompt = g_.input("prompt", "string")
    greedy = {"max_new_tokens": 16, "do_sample": False}
    gen1 = g_.model("gen1", "gpt2", text=prompt, parameters=greedy)
    gen2 = g_.model("gen2", "distilgpt2", text=prompt, parameters=greedy)
    texts = g_.aggregate("texts", "list", [gen1["text"], gen2["text"]])
    scores = g_.map("scores", over=texts["value"], model="bert", inputs={"text": g_.item})
    g_.output("gpt2_text", gen1["text"])
    g_.output("gpt2_score", scores["results"][0])
    g_.output("distilgpt2_text", gen2["text"])
    g_.output("distilgpt2_score", scores["results"][1])
    assert g_.build() == load_graph(GRAPHS / "inference-graph.yaml")


def test_streaming_and_ensemble_match_their_yaml() -> None:
    s = GraphBuilder(
        "streaming",
        description="gpt2 generates; sentiment classifies each sentence as soon as it is complete.",
    )
    prompt = s.input("prompt", "string")
    gen = s.model(
        "generate", "gpt2", text=prompt, parameters={"max_new_tokens": 48, "do_sample": False}
    )
    mood = s.model("sentiment", "sentiment", text=gen["text"], stream="segment")
    s.output("text", gen["text"])
    s.output("sentences", mood["segments"])
    s.output("sentiments", mood["results"])
    assert s.build() == load_graph(GRAPHS / "streaming.yaml")

    e = GraphBuilder(
        "ensemble",
        description="Three sentiment classifiers in parallel, combined by majority vote.",
    )
    text = e.input("text", "string")
    labels = e.input("labels", "list", default=["POSITIVE", "NEGATIVE"])
    members = [
        e.model("sentiment", "sentiment", text=text, optional=True),
        e.model("bert", "bert", text=text, optional=True),
        e.model("zero-shot", "zero-shot", text=text, candidate_labels=labels, optional=True),
    ]
    vote = e.aggregate("vote", "majority_vote", [m["label"] for m in members])
    e.output("label", vote["label"])
    e.output("votes", vote["votes"])
    assert e.build() == load_graph(GRAPHS / "ensemble.yaml")


def test_switch_and_node_options_match_their_yaml() -> None:
    b = GraphBuilder("route")
    text = b.input("text", "string")
    limit = b.input("limit", "int", required=False)
    cls = b.model("cls", "sentiment", text=text, selector="device=cpu", timeout=1.5, retries=2)
    reply = b.switch(
        "reply",
        cases=[
            (b.when(cls["label"], "==", "POSITIVE"), b.call("gpt2", text=text)),
            (b.when(cls["score"], "<", 0.5), b.call("distilgpt2", inputs={"text": text})),
        ],
        default=b.call("normalize", text=text, parameters={"lower": True}),
        optional=True,
    )
    each = b.map("each", over="inputs.items", model="bert", text=b.item, concurrency=2)
    b.output("reply", reply)
    b.output("each", each["results"])
    b.output("limit", limit)
    expected = """
name: route
inputs:
  text: string
  limit: {kind: int, required: false}
nodes:
  - name: cls
    model: sentiment
    inputs: {text: inputs.text}
    selector: device=cpu
    timeout: 1.5
    retries: 2
  - name: reply
    optional: true
    switch:
      cases:
        - when: {value: cls.label, op: "==", operand: POSITIVE}
          call: {model: gpt2, inputs: {text: inputs.text}}
        - when: {value: cls.score, op: "<", operand: 0.5}
          call: {model: distilgpt2, inputs: {text: inputs.text}}
      default: {model: normalize, inputs: {text: inputs.text}, parameters: {lower: true}}
  - name: each
    map: {over: inputs.items, call: {model: bert, inputs: {text: item}}, concurrency: 2}
outputs: {reply: reply, each: each.results, limit: inputs.limit}
"""
    assert b.build() == graph_from_dict(yaml.safe_load(expected))


def test_handles_turn_into_reference_strings() -> None:
    b = GraphBuilder("x")
    prompt = b.input("prompt")
    assert isinstance(prompt, InputRef) and prompt.name == "prompt"
    assert str(prompt) == "inputs.prompt"
    assert str(prompt["a"][0]) == "inputs.prompt.a.0"
    gen = b.model("gen", "gpt2", text=prompt)
    assert isinstance(gen, NodeRef) and gen.name == "gen"
    assert str(gen) == "gen" and str(gen["text"]) == "gen.text"
    assert str(b.item["label"]) == "item.label"
    assert repr(gen["text"]) == "ValueRef('gen.text')"
    assert isinstance(gen["text"], ValueRef)


def test_inputs_follow_the_file_forms_required_rule() -> None:
    b = GraphBuilder("x")
    b.input("a", "string")
    b.input("b", "int", default=3)
    b.input("c", "int", required=False)
    b.input("d", default=None)
    a, b_, c, d = b.build().inputs
    assert (a.kind, a.required, a.HasField("default")) == (v.VALUE_KIND_STRING, True, False)
    assert (b_.required, from_value(b_.default)) == (False, 3)
    assert (c.required, c.HasField("default")) == (False, False)
    assert (d.kind, d.required, d.HasField("default")) == (v.VALUE_KIND_ANY, False, True)


def test_inputs_may_be_given_both_ways_but_not_twice() -> None:
    b = GraphBuilder("x")
    b.model("a", "m", inputs={"selector": "inputs.s"}, text="inputs.t")  # a clashing name
    assert dict(b.build().nodes[0].model.inputs) == {"selector": "inputs.s", "text": "inputs.t"}
    with pytest.raises(TypeError, match="input 'text' given both"):
        b.model("b", "m", inputs={"text": "inputs.t"}, text="inputs.u")


def test_names_are_the_file_forms_and_unknown_ones_are_refused_at_once() -> None:
    b = GraphBuilder("x")
    b.input("a", "VALUE_KIND_TENSOR")
    assert b.build().inputs[0].kind == v.VALUE_KIND_TENSOR
    assert b.when("inputs.a", "not in", [1]).op == g.CONDITION_OP_NOT_IN
    with pytest.raises(InvalidArgument, match=r"unknown kind 'strin' \(did you mean 'string'\?\)"):
        b.input("b", "strin")
    with pytest.raises(InvalidArgument, match="unknown op '=~'; use one of ==, !=, >,"):
        b.when("inputs.a", "=~", 1)
    with pytest.raises(InvalidArgument, match="unknown aggregate method 'mean'"):
        b.aggregate("avg", "mean", ["inputs.a"])


def test_build_returns_a_copy() -> None:
    b = GraphBuilder("x")
    first = b.build()
    b.model("a", "m")
    assert len(first.nodes) == 0
    assert len(b.build().nodes) == 1


def test_a_built_example_validates() -> None:
    b = GraphBuilder("seq")
    text = b.input("text", "string")
    clean = b.model("clean", "normalize", text=text)
    cls = b.model("classify", "sentiment", text=clean["text"])
    b.output("label", cls["label"])
    assert validate(b.build()) == Report([], [])
    assert b.build().nodes[1].model == g.ModelCall(model="sentiment", inputs={"text": "clean.text"})
