"""Graph files: the proto's JSON shape, its conveniences, round trips, and shape errors."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from composer.spec import dump_graph, load_graph
from modelyard.errors import InvalidArgument
from modelyard.graph_spec import graph_from_dict, graph_to_dict
from modelyard.times import seconds
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import value_pb2 as v
from modelyard.values import from_value, to_value

EVERY_KIND = """
name: every-kind
description: one node of each kind, every field set
inputs:
  - {name: text, kind: string}
  - {name: labels, kind: list, default: [a, b]}
  - {name: limit, kind: int, required: false}
  - {name: style, kind: string, required: true, default: plain}
nodes:
  - name: gen
    model: gpt2
    inputs: {text: inputs.text}
    parameters: {max_new_tokens: 16, do_sample: false, temperature: 0.5, stop: [".", "!"]}
    selector: device=cuda
    optional: true
    timeout: 2.5
    retries: 2
  - name: mood
    model: sentiment
    inputs: {text: gen.text}
    stream: segment
    segment_delimiters: ".\\n"
  - name: each
    map:
      over: inputs.labels
      call: {model: bert, inputs: {text: item}, parameters: {top_k: null}}
      concurrency: 4
  - name: route
    switch:
      cases:
        - when: {value: mood.results.0.label, op: "==", operand: POSITIVE}
          call: {model: distilgpt2, inputs: {text: inputs.text}}
        - when: {value: gen.text, op: in, operand: [x, y]}
          call: {model: gpt2, inputs: {text: gen.text}}
      default: {model: normalize, inputs: {text: inputs.text}}
  - name: vote
    aggregate: {method: weighted_average, values: [each.results.0.score, gen.score],
                weights: [2, 1.5]}
outputs:
  text: gen.text
  vote: vote.value
"""


def load(text: str) -> g.Graph:
    return graph_from_dict(yaml.safe_load(text))


def message(text: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        load(text)
    return caught.value.message


def test_every_kind_reads_into_the_proto() -> None:
    graph = load(EVERY_KIND)
    assert graph.name == "every-kind"
    assert [n.WhichOneof("kind") for n in graph.nodes] == [
        "model",
        "model",
        "map",
        "switch",
        "aggregate",
    ]
    gen, mood, each, route, vote = graph.nodes
    assert gen.model.model == "gpt2"
    assert dict(gen.model.inputs) == {"text": "inputs.text"}
    assert (gen.optional, seconds(gen.timeout), gen.retries) == (True, 2.5, 2)
    assert gen.model.selector == "device=cuda"
    assert mood.model.stream == g.STREAM_MODE_SEGMENT
    assert mood.model.segment_delimiters == ".\n"
    assert (each.map.over, each.map.call.model, each.map.concurrency) == (
        "inputs.labels",
        "bert",
        4,
    )
    assert route.switch.cases[0].when.op == g.CONDITION_OP_EQ
    assert route.switch.cases[1].when.op == g.CONDITION_OP_IN
    assert from_value(route.switch.cases[1].when.operand) == ["x", "y"]
    assert route.switch.default.model == "normalize"
    assert vote.aggregate.method == g.AGGREGATE_METHOD_WEIGHTED_AVERAGE
    assert list(vote.aggregate.weights) == [2.0, 1.5]
    assert dict(graph.outputs) == {"text": "gen.text", "vote": "vote.value"}


def test_parameters_are_plain_values_kept_exactly() -> None:
    params = load(EVERY_KIND).nodes[0].model.parameters
    assert params["max_new_tokens"] == to_value(16)  # an int stays an int
    assert params["do_sample"] == to_value(False)
    assert params["temperature"] == to_value(0.5)
    assert params["stop"] == to_value([".", "!"])
    assert load(EVERY_KIND).nodes[2].map.call.parameters["top_k"] == to_value(None)


def test_input_forms_and_the_required_rule() -> None:
    inputs = {i.name: i for i in load(EVERY_KIND).inputs}
    # required unless it has a default; `required` overrides either way
    assert inputs["text"].required and not inputs["text"].HasField("default")
    assert not inputs["labels"].required and from_value(inputs["labels"].default) == ["a", "b"]
    assert not inputs["limit"].required and not inputs["limit"].HasField("default")
    assert inputs["style"].required and from_value(inputs["style"].default) == "plain"


def test_inputs_as_a_mapping_equal_the_list_form() -> None:
    as_mapping = """
name: x
inputs:
  text: string
  labels: {kind: list, default: [a, b]}
  limit: {kind: int, required: false}
  anything: {}
  nothing: {kind: any, default: null}
"""
    as_list = """
name: x
inputs:
  - {name: text, kind: string}
  - {name: labels, kind: list, default: [a, b]}
  - {name: limit, kind: int, required: false}
  - {name: anything}
  - {name: nothing, default: null}
"""
    graph = load(as_mapping)
    assert graph == load(as_list)
    nothing = graph.inputs[4]
    assert nothing.kind == v.VALUE_KIND_ANY and not nothing.required
    assert [i.kind for i in graph.inputs[:3]] == [
        v.VALUE_KIND_STRING,
        v.VALUE_KIND_LIST,
        v.VALUE_KIND_INT,
    ]
    assert nothing.HasField("default") and from_value(nothing.default) is None  # null is a value


def test_model_shorthand_equals_the_nested_call() -> None:
    nested = """
name: x
nodes:
  - name: gen
    model: {model: gpt2, inputs: {text: inputs.p}, parameters: {max_new_tokens: 16},
            selector: device=cpu, stream: chunk}
"""
    shorthand = """
name: x
nodes:
  - name: gen
    model: gpt2
    inputs: {text: inputs.p}
    parameters: {max_new_tokens: 16}
    selector: device=cpu
    stream: chunk
"""
    assert load(nested) == load(shorthand)
    assert load(nested).nodes[0].model.stream == g.STREAM_MODE_CHUNK


@pytest.mark.parametrize(
    ("written", "mode"),
    [
        ("chunk", g.STREAM_MODE_CHUNK),
        ("segment", g.STREAM_MODE_SEGMENT),
        ("none", g.STREAM_MODE_UNSPECIFIED),
        ("null", g.STREAM_MODE_UNSPECIFIED),
        ("STREAM_MODE_SEGMENT", g.STREAM_MODE_SEGMENT),
        ("STREAM_MODE_UNSPECIFIED", g.STREAM_MODE_UNSPECIFIED),
    ],
)
def test_stream_spellings(written: str, mode: int) -> None:
    graph = load(f"{{name: x, nodes: [{{name: a, model: m, stream: {written}}}]}}")
    assert graph.nodes[0].model.stream == mode


@pytest.mark.parametrize(
    ("key", "written", "read"),
    [
        ("op", "'=='", lambda n: n.switch.cases[0].when.op == g.CONDITION_OP_EQ),
        ("op", "eq", lambda n: n.switch.cases[0].when.op == g.CONDITION_OP_EQ),
        ("op", "not in", lambda n: n.switch.cases[0].when.op == g.CONDITION_OP_NOT_IN),
        ("op", "not_in", lambda n: n.switch.cases[0].when.op == g.CONDITION_OP_NOT_IN),
        ("op", "CONDITION_OP_GE", lambda n: n.switch.cases[0].when.op == g.CONDITION_OP_GE),
        (
            "method",
            "majority_vote",
            lambda n: n.aggregate.method == g.AGGREGATE_METHOD_MAJORITY_VOTE,
        ),
        (
            "method",
            "AGGREGATE_METHOD_LIST",
            lambda n: n.aggregate.method == g.AGGREGATE_METHOD_LIST,
        ),
        ("kind", "tensor", lambda i: i.kind == v.VALUE_KIND_TENSOR),
        ("kind", "VALUE_KIND_BYTES", lambda i: i.kind == v.VALUE_KIND_BYTES),
    ],
)
def test_enum_spellings(key: str, written: str, read: Any) -> None:
    """The lowercase names files use, the proto's enum names, and their lowercase suffixes."""
    if key == "kind":
        assert read(load(f"{{name: x, inputs: {{a: {{kind: {written}}}}}}}").inputs[0])
        return
    body = (
        f"switch: {{cases: [{{when: {{value: a, op: {written}, operand: 1}}}}]}}"
        if key == "op"
        else f"aggregate: {{method: {written}, values: [a]}}"
    )
    assert read(load(f"{{name: x, nodes: [{{name: n, {body}}}]}}").nodes[0])


def test_timeouts_are_seconds_or_proto_durations() -> None:
    graph = load(
        "{name: x, nodes: [{name: a, model: m, timeout: 1.5}, {name: b, model: m, timeout: 0.25s}]}"
    )
    assert [seconds(n.timeout) for n in graph.nodes] == [1.5, 0.25]
    assert [
        n.HasField("timeout") for n in load("{name: x, nodes: [{name: a, model: m}]}").nodes
    ] == [False]
    assert graph_to_dict(graph)["nodes"][1]["timeout"] == 0.25  # written as seconds


def test_round_trip_from_the_file_form() -> None:
    graph = load(EVERY_KIND)
    again = graph_to_dict(graph)
    assert graph_from_dict(again) == graph
    assert graph_from_dict(yaml.safe_load(dump_graph(graph))) == graph
    assert graph_from_dict(json.loads(dump_graph(graph, "json"))) == graph
    # the canonical form: shorthand model calls, stream by its short name, empties left out
    assert again["nodes"][1] == {
        "name": "mood",
        "model": "sentiment",
        "inputs": {"text": "gen.text"},
        "stream": "segment",
        "segment_delimiters": ".\n",
    }
    # `required` is written only where it differs from "required unless it has a default"
    assert again["inputs"] == [
        {"name": "text", "kind": "string"},
        {"name": "labels", "kind": "list", "default": ["a", "b"]},
        {"name": "limit", "kind": "int", "required": False},
        {"name": "style", "kind": "string", "required": True, "default": "plain"},
    ]


def test_round_trip_from_the_proto_keeps_broken_graphs_as_they_are() -> None:
    # Validation reports these; the file form must carry them unchanged, not repair them.
    graph = g.Graph(name="x")
    graph.nodes.add(name="kindless")
    graph.nodes.add(name="empty-map").map.SetInParent()
    graph.nodes.add(name="empty-switch").switch.cases.add()
    graph.nodes.add(name="no-model").model.SetInParent()
    assert graph_from_dict(graph_to_dict(graph)) == graph
    assert graph_to_dict(graph)["nodes"][0] == {"name": "kindless"}


def test_a_tensor_parameter_round_trips_through_the_dict_but_not_json() -> None:
    graph = g.Graph(name="x")
    call = graph.nodes.add(name="a").model
    call.model = "m"
    call.parameters["bias"].CopyFrom(to_value(np.arange(3, dtype=np.float32)))
    assert graph_from_dict(graph_to_dict(graph)) == graph
    with pytest.raises(InvalidArgument, match="cannot write this graph as json"):
        dump_graph(graph, "json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "{name: x, nodes: [{name: gen, modle: gpt2}]}",
            "node 'gen': unknown key 'modle' (did you mean 'model'?)",
        ),
        (
            "{name: x, nodse: []}",
            "graph: unknown key 'nodse' (did you mean 'nodes'?)",
        ),
        (
            "{name: x, inputs: {p: {kind: string, requried: true}}}",
            "input 'p': unknown key 'requried' (did you mean 'required'?)",
        ),
        (
            "{name: x, nodes: [{name: m, map: {over: a, call: {model: b}, concurency: 2}}]}",
            "node 'm', map: unknown key 'concurency' (did you mean 'concurrency'?)",
        ),
        (
            "{name: x, nodes: [{name: s, switch: {cases: [{when: {value: a, op: '==', x: 1}}]}}]}",
            "node 's', switch case 0 when: unknown key 'x' (expected: value, op, operand)",
        ),
        (
            "{name: x, nodes: [{name: a, aggregate: {method: concat, values: [b], zz: 1}}]}",
            "node 'a', aggregate: unknown key 'zz' (expected: method, values, weights)",
        ),
        (
            "{name: x, nodes: [{name: gen, model: {model: gpt2, input: {}}}]}",
            "node 'gen', model: unknown key 'input' (did you mean 'inputs'?)",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, timeout_seconds: 2}]}",
            "node 'gen': unknown key 'timeout_seconds' (did you mean 'timeout'?)",
        ),
    ],
)
def test_unknown_keys_are_named_with_where_they_are(text: str, expected: str) -> None:
    assert message(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "{name: x, nodes: [{name: gen, model: gpt2, retries: '3'}]}",
            "node 'gen': 'retries' must be an integer, got a string ('3')",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, optional: 1}]}",
            "node 'gen': 'optional' must be true or false, got an integer",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, timeout: true}]}",
            "node 'gen': 'timeout' must be a number of seconds (or a duration such as "
            '"2.5s"), got true/false',
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, timeout: soon}]}",
            "node 'gen': 'timeout' must be a number of seconds (or a duration such as "
            "\"2.5s\"), got a string ('soon')",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, timeout: .nan}]}",
            "node 'gen': 'timeout' must be a number of seconds (or a duration such as "
            '"2.5s"), got a number',
        ),
        (
            "{name: x, inputs: {a: {kind: str}}}",
            "input 'a': 'kind' must be one of any, bool, int, float, string, bytes, list, map, "
            "tensor, got a string ('str') (did you mean 'string'?)",
        ),
        (
            "{name: x, inputs: {a: {kind: 3}}}",
            "input 'a': 'kind' must be one of any, bool, int, float, string, bytes, list, map, "
            "tensor, got an integer",
        ),
        (
            "{name: x, nodes: [{name: s, switch: {cases: [{when: {value: a, op: '==='}}]}}]}",
            "node 's', switch case 0 when: 'op' must be one of ==, !=, >, >=, <, <=, in, "
            "not in, got a string ('===') (did you mean '=='?)",
        ),
        (
            "{name: x, nodes: [{name: a, aggregate: {method: mean, values: [b]}}]}",
            "node 'a', aggregate: 'method' must be one of majority_vote, weighted_average, "
            "concat, collect, list, got a string ('mean')",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, inputs: [text]}]}",
            "node 'gen': 'inputs' must be a mapping, got a list",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, inputs: {text: 3}}]}",
            "node 'gen': inputs: 'text' must be a reference, got an integer",
        ),
        (
            "{name: x, nodes: [{name: gen, model: gpt2, stream: sentence}]}",
            "node 'gen': 'stream' must be chunk, segment or none, got 'sentence'",
        ),
        (
            "{name: x, nodes: [{name: a, aggregate: {method: concat, values: [b, 1]}}]}",
            "node 'a', aggregate: value 1 must be a reference, got an integer",
        ),
        (
            "{name: x, nodes: [{name: a, aggregate: {values: [b], weights: [x]}}]}",
            "node 'a', aggregate: weight 0 must be a number, got a string ('x')",
        ),
        ("{name: x, nodes: [gen]}", "node at position 0: must be a mapping, got a string ('gen')"),
        ("{name: x, nodes: {gen: {}}}", "graph: 'nodes' must be a list, got a mapping"),
        ("{name: x, inputs: 3}", "graph: 'inputs' must be a mapping or a list, got an integer"),
        ("{name: x, outputs: {3: a}}", "graph: outputs: keys are strings, got 3 (quote it)"),
        (
            "{name: x, inputs: {on: string}}",  # YAML 1.1 reads `on` as true
            "inputs: input names are strings, got True (quote it)",
        ),
        (
            "{name: x, inputs: [{kind: string, name: [p]}]}",
            "input at position 0: 'name' must be a string, got a list",
        ),
    ],
)
def test_wrong_types_are_named(text: str, expected: str) -> None:
    assert message(text) == expected


def test_a_node_has_one_kind() -> None:
    text = "{name: x, nodes: [{name: a, model: m, aggregate: {method: concat}}]}"
    assert message(text) == "node 'a': has both 'model' and 'aggregate'; pick one kind"


def test_call_keys_beside_a_nested_call_are_refused() -> None:
    text = "{name: x, nodes: [{name: a, model: {model: m}, inputs: {text: inputs.t}}]}"
    assert message(text) == (
        "node 'a': unknown key 'inputs' here: it belongs to a model call, beside "
        "'model: <name>' or inside the call's mapping"
    )
    text = "{name: x, nodes: [{name: a, map: {over: l, call: {model: m}}, parameters: {}}]}"
    assert message(text).startswith("node 'a': unknown key 'parameters' here")


def test_values_without_a_value_form_are_refused() -> None:
    data: dict[str, Any] = {
        "name": "x",
        "nodes": [{"name": "a", "model": "m", "parameters": {"when": datetime.date(2024, 1, 1)}}],
    }
    with pytest.raises(InvalidArgument) as caught:
        graph_from_dict(data)
    assert caught.value.message == (
        "node 'a': parameter 'when': cannot encode a date as a modelyard Value"
    )


def test_null_means_not_given() -> None:
    graph = load(
        "{name: x, description: null, inputs: null, nodes: [{name: a, model: m, "
        "inputs: null, retries: null}], outputs: null}"
    )
    assert graph == g.Graph(name="x", nodes=[g.Node(name="a", model=g.ModelCall(model="m"))])


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_load_graph_by_suffix(tmp_path: Path, suffix: str) -> None:
    graph = load(EVERY_KIND)
    path = tmp_path / f"graph{suffix}"
    path.write_text(dump_graph(graph, "json" if suffix == ".json" else "yaml"))
    assert load_graph(path) == graph


def test_load_graph_errors_name_the_file(tmp_path: Path) -> None:
    cases = {  # what follows the file's path in the message
        "graph.txt": ("name: x", ": graph files end in .yaml, .yml or .json"),
        "bad.yaml": ("name: [x", ", line 1: expected ','"),  # a syntax error: and its line
        "bad.json": ("{", ", line 1: Expecting property name"),
        "list.yaml": ("- a", ": a graph file holds a mapping, got a list"),
        "typo.yaml": ("name: x\nnodes: [{name: a, modle: m}]", ": node 'a': unknown key 'modle'"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InvalidArgument) as caught:
            load_graph(path)
        assert caught.value.message.startswith(f"{path}{expected}"), caught.value.message


def test_dump_graph_refuses_an_unknown_format() -> None:
    with pytest.raises(InvalidArgument, match="unknown graph format 'toml'"):
        dump_graph(g.Graph(name="x"), "toml")  # type: ignore[arg-type]


def test_yaml_dump_reads_naturally() -> None:
    text = dump_graph(load("{name: x, nodes: [{name: a, model: m, inputs: {text: inputs.t}}]}"))
    assert text == "name: x\nnodes:\n- name: a\n  model: m\n  inputs: {text: inputs.t}\n"
