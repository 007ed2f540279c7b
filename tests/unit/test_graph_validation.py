"""Graph validation: each rule and its exact message, metadata checks, order and cycles,
and the example graphs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from composer.references import dependencies
from composer.spec import graph_from_dict, load_graph
from composer.validation import Report, Unchecked, validate
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import predict_pb2 as p
from modelyard.v1 import value_pb2 as v
from modelyard.values import to_value

GRAPHS = Path(__file__).parents[2] / "examples" / "graphs"
EXAMPLES = sorted(GRAPHS.glob("*.yaml"))


def gen(name: str = "gen", **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": "gpt2", "inputs": {"text": "inputs.text"}, **extra}


def make(*nodes: dict[str, Any], outputs: dict[str, str] | None = None, **graph: Any) -> g.Graph:
    """A graph with input `text`; by default its outputs use every node, so that the
    "unused" warnings stay out of tests about other rules."""
    data = {"name": "t", "inputs": {"text": "string"}, "nodes": list(nodes), **graph}
    data["outputs"] = outputs if outputs is not None else {n["name"]: n["name"] for n in nodes}
    return graph_from_dict(data)


def errors(*nodes: dict[str, Any], **graph: Any) -> list[str]:
    return validate(make(*nodes, **graph)).errors


def warnings(*nodes: dict[str, Any], **graph: Any) -> list[str]:
    report = validate(make(*nodes, **graph))
    assert report.errors == []
    return report.warnings


def test_a_valid_graph() -> None:
    report = validate(
        make(gen(), {"name": "mood", "model": "sentiment", "inputs": {"text": "gen.text"}})
    )
    assert report == Report([], [])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "graph has no name"),
        (
            "my graph",
            "graph name 'my graph' is invalid: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
        ),
        (
            "-x",
            "graph name '-x' is invalid: use letters, digits, '.', '_' and '-', starting "
            "with a letter or digit",
        ),
    ],
)
def test_graph_name(name: str, expected: str) -> None:
    assert errors(gen(), name=name) == [expected]


def test_node_names() -> None:
    dup = errors(gen(), gen())
    assert dup == ["node 'gen': the name is used by more than one node"]
    assert errors(gen("a.b")) == [
        "node 'a.b': invalid name: use letters, digits, '_' and '-' (no dots: references use them)",
        "output 'a.b' references 'a.b', but there is no node 'a'",
    ]
    for reserved in ("inputs", "item"):
        assert errors(gen(reserved), outputs={"x": "inputs.text"})[0] == (
            f"node '{reserved}': the name is reserved (references use inputs and item)"
        )
    assert errors(gen(""), outputs={"x": "inputs.text"}) == ["node at position 0 has no name"]


def test_every_node_has_a_kind() -> None:
    assert errors({"name": "a"}) == [
        "node 'a': has no kind (give one of model, map, switch, aggregate)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "gen3.text",
            "node 'score': input 'text' references 'gen3.text', but there is no node 'gen3'",
        ),
        (
            "inputs.txt",
            "node 'score': input 'text' references 'inputs.txt', but the graph has no input 'txt'",
        ),
        (
            "item",
            "node 'score': input 'text' references 'item', but 'item' exists only in the "
            "inputs of a map node's call",
        ),
        (
            "gen..text",
            "node 'score': input 'text': reference 'gen..text' is malformed: use "
            "inputs.<name>, <node>, <node>.<field> or item",
        ),
        (
            "inputs",
            "node 'score': input 'text': reference 'inputs' names no input: use inputs.<name>",
        ),
    ],
)
def test_references_resolve(text: str, expected: str) -> None:
    score = {"name": "score", "model": "bert", "inputs": {"text": text}}
    assert errors(gen(), score) == [expected]


def test_references_in_every_place() -> None:
    nodes = [
        {"name": "m", "map": {"over": "nope", "call": {"model": "bert", "inputs": {"t": "item"}}}},
        {
            "name": "s",
            "switch": {
                "cases": [
                    {
                        "when": {"value": "item", "op": "==", "operand": 1},
                        "call": {"model": "a", "inputs": {"t": "x1"}},
                    }
                ],
                "default": {"model": "b", "inputs": {"t": "x2"}},
            },
        },
        {"name": "v", "aggregate": {"method": "concat", "values": ["inputs.text", "x3"]}},
    ]
    assert errors(*nodes, outputs={"o": "item", "m": "m", "s": "s", "v": "v"}) == [
        "node 'm': 'over' references 'nope', but there is no node 'nope'",
        "node 's': case 0 condition references 'item', but 'item' exists only in the inputs "
        "of a map node's call",
        "node 's': case 0 input 't' references 'x1', but there is no node 'x1'",
        "node 's': default input 't' references 'x2', but there is no node 'x2'",
        "node 'v': value 1 references 'x3', but there is no node 'x3'",
        "output 'o' references 'item', but 'item' exists only in the inputs of a map node's call",
    ]


def test_cycles_are_named() -> None:
    a = {"name": "a", "model": "m", "inputs": {"x": "b.text"}}
    b = {"name": "b", "model": "m", "inputs": {"x": "a.text"}}
    assert errors(a, b) == ["cycle: a -> b -> a"]
    own = {"name": "own", "model": "m", "inputs": {"x": "own"}}
    assert errors(own) == ["cycle: own -> own"]
    # each arrow reads "feeds": c reads a, b reads c, a reads b
    three = [
        {"name": "a", "model": "m", "inputs": {"x": "b"}},
        {"name": "b", "model": "m", "inputs": {"x": "c"}},
        {"name": "c", "model": "m", "inputs": {"x": "a"}},
    ]
    assert errors(*three) == ["cycle: a -> c -> b -> a"]


def test_outputs() -> None:
    assert errors(gen(), outputs={}) == ["graph has no outputs"]
    assert (
        warnings(gen(), outputs={"whole": "gen", "deep": "gen.scores.0", "in": "inputs.text"}) == []
    )


def test_selectors_parse() -> None:
    assert errors(gen(selector="device==cuda")) == [
        "node 'gen': selector term 'device==cuda' has more than one operator (operators are "
        "=, !=, >, >=, <, <=)"
    ]
    assert errors(gen(selector="device=cuda,gpu_memory>=16GiB")) == []


def test_model_calls_name_a_model() -> None:
    assert errors({"name": "a", "model": ""}) == ["node 'a': call names no model"]
    assert errors({"name": "a", "model": "bad model"}) == [
        "node 'a': model name 'bad model' is invalid: use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit"
    ]


def test_node_options() -> None:
    assert errors(gen(timeout=-1.5, retries=-2)) == [
        "node 'gen': timeout must be 0 or more, got -1.5s",
        "node 'gen': retries must be 0 or more, got -2",
    ]


def test_map_nodes() -> None:
    assert errors({"name": "m", "map": {"call": {"model": "bert"}, "concurrency": -1}}) == [
        "node 'm': map needs 'over', a reference to the list",
        "node 'm': concurrency must be 0 or more (0: 8), got -1",
    ]
    assert errors({"name": "m", "map": {"over": "inputs.text"}}) == [
        "node 'm': map has no call (the model called for each element)"
    ]
    over_item = {
        "name": "m",
        "map": {"over": "item", "call": {"model": "b", "inputs": {"t": "item"}}},
    }
    assert errors(over_item) == [
        "node 'm': 'over' references 'item', but 'item' exists only in the inputs of a map "
        "node's call"
    ]
    same = {
        "name": "m",
        "map": {"over": "inputs.text", "call": {"model": "b", "inputs": {"t": "inputs.text"}}},
    }
    assert warnings(same) == [
        "node 'm': the call never references 'item', so every element gets the same inputs"
    ]
    each = {
        "name": "m",
        "map": {"over": "inputs.text", "call": {"model": "b", "inputs": {"t": "item.a"}}},
    }
    assert warnings(each) == []


def switch(*cases: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "s", "switch": {"cases": list(cases), **extra}}


def case(op: str | None = "==", **when: Any) -> dict[str, Any]:
    return {"when": {"value": "inputs.text", "op": op, **when}, "call": {"model": "m"}}


def test_switch_nodes() -> None:
    assert errors(switch(default={"model": "m"})) == ["node 's': switch has no cases"]
    assert errors(switch(case(None, operand=1))) == [
        "node 's': case 0 op is not set (give one of ==, !=, >, >=, <, <=, in, not in)"
    ]
    assert errors(switch(case("in", operand="abc"), case("not in", operand={"a": 1}))) == [
        "node 's': case 0 op 'in' needs a list operand",
        "node 's': case 1 op 'not in' needs a list operand",
    ]
    assert errors(switch(case("in", operand=["a", "b"]), case("==", operand=None))) == []
    assert errors(switch(case())) == ["node 's': case 0 condition has no operand"]
    assert errors(switch({"call": {"model": "m"}})) == [
        "node 's': case 0 has no condition ('when')"
    ]
    assert errors(switch({"when": {"value": "inputs.text", "op": "==", "operand": 1}})) == [
        "node 's': case 0 has no call"
    ]
    assert errors(switch({"when": {"op": "==", "operand": 1}, "call": {"model": "m"}})) == [
        "node 's': case 0 condition names no value"
    ]


def aggregate(method: str | None, values: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": "v", "aggregate": {"method": method, "values": values, **extra}}


def test_aggregate_nodes() -> None:
    assert errors(aggregate(None, ["inputs.text"])) == [
        "node 'v': method is not set (give one of "
        "majority_vote, weighted_average, concat, collect, list)"
    ]
    assert errors(aggregate("concat", [])) == ["node 'v': aggregate has no values"]
    two = ["inputs.text", "inputs.text"]
    assert errors(aggregate("weighted_average", two, weights=[1, 2, 3])) == [
        "node 'v': 3 weights for 2 values"
    ]
    assert warnings(aggregate("weighted_average", two, weights=[1, 2])) == []
    assert warnings(aggregate("concat", two, weights=[1, 2])) == [
        "node 'v': weights are used by weighted_average only"
    ]


def consumer(**inputs: str) -> dict[str, Any]:
    return {"name": "c", "model": "sentiment", "inputs": inputs, "stream": "segment"}


def test_streaming_needs_one_plain_model_node_upstream() -> None:
    assert errors(consumer(text="inputs.text")) == [
        "node 'c': stream 'segment' needs an input that references another node (the upstream)"
    ]
    vote = aggregate("concat", ["inputs.text"])
    assert errors(vote, consumer(text="v.value")) == [
        "node 'c': stream 'segment' needs a plain model node upstream, but its inputs "
        "reference 'v' (an aggregate node)"
    ]
    chained = gen("b", stream="chunk", inputs={"text": "gen.text"})
    assert errors(gen(), chained, consumer(text="b.text")) == [
        "node 'c': stream 'segment' needs a plain model node upstream, but its inputs "
        "reference 'b' (a model node that streams itself)"
    ]
    assert errors(gen("a"), gen("b"), consumer(text="a.text", other="b.text")) == [
        "node 'c': stream 'segment' reads one upstream, but its inputs reference 'a' and 'b'"
    ]
    # other nodes may feed it as well, as long as one plain model node is the stream
    assert errors(gen(), vote, consumer(text="gen.text", candidate_labels="v.value")) == []


def test_only_model_nodes_stream() -> None:
    streamed = {"model": "m", "inputs": {"t": "item"}, "stream": "chunk"}
    mapped = {"name": "m", "map": {"over": "gen.text", "call": streamed}}
    assert errors(gen(), mapped) == [
        "node 'm': call stream 'chunk': only model nodes stream, not a switch's or map's call"
    ]
    routed = switch(
        case(operand=1) | {"call": {"model": "m", "inputs": {"t": "gen.text"}, "stream": "segment"}}
    )
    assert errors(gen(), routed) == [
        "node 's': case 0 stream 'segment': only model nodes stream, not a switch's or map's call"
    ]


def test_segment_delimiters_without_segment_streaming_warn() -> None:
    assert warnings(gen(segment_delimiters=".")) == [
        "node 'gen': segment_delimiters is set, but stream is not segment"
    ]


def test_graph_inputs() -> None:
    graph = make(
        gen(),
        inputs=[
            {"name": "text", "kind": "string"},
            {"name": "text", "kind": "int"},
            {"name": "a.b"},
            {"kind": "int"},
            {"name": "n", "kind": "int", "default": "three"},
            {"name": "ok", "kind": "float", "default": 1},
            {"name": "none", "kind": "int", "default": None},
            {"name": "both", "kind": "int", "default": 1, "required": True},
        ],
        outputs={
            "gen": "gen",
            "n": "inputs.n",
            "ok": "inputs.ok",
            "none": "inputs.none",
            "unset": "inputs.unset",
        },
    )
    graph.inputs.add(name="unset", default=to_value([1]))  # no kind: only the proto can say so
    report = validate(graph)
    assert report.errors == [
        "input 'text': the name is used by more than one input",
        "input 'a.b': invalid name: use letters, digits, '_' and '-' (no dots: references use "
        "them)",
        "input at position 3 has no name",
        "default of input 'n' must be an integer, got a string",
        "input 'unset': kind is not set (give one of any, bool, int, float, string, bytes, "
        "list, map, tensor)",
    ]
    assert report.warnings == [
        "input 'both': it is required, so its default is never used",
        "input 'a.b' is not used",
        "input 'both' is not used",
    ]


def test_unused_nodes_warn() -> None:
    assert warnings(gen(), gen("other"), outputs={"x": "gen.text"}) == [
        "node 'other': nothing uses its outputs"
    ]


# --- metadata ---------------------------------------------------------------------------


def field(
    name: str, kind: v.ValueKind.ValueType = v.VALUE_KIND_STRING, required: bool = True
) -> p.FieldSpec:
    return p.FieldSpec(name=name, kind=kind, required=required)


TEXT = [field("text")]
PARAMS = [
    field("max_new_tokens", v.VALUE_KIND_INT, False),
    field("do_sample", v.VALUE_KIND_BOOL, False),
]
SERVED = {
    "gpt2": p.GetModelMetadataResponse(
        model="gpt2", inputs=TEXT, parameters=PARAMS, streaming=True
    ),
    "distilgpt2": p.GetModelMetadataResponse(
        model="distilgpt2", inputs=TEXT, parameters=PARAMS, streaming=True
    ),
    "bert": p.GetModelMetadataResponse(model="bert", inputs=TEXT),
    "sentiment": p.GetModelMetadataResponse(model="sentiment", inputs=TEXT),
    "zero-shot": p.GetModelMetadataResponse(
        model="zero-shot", inputs=[field("text"), field("candidate_labels", v.VALUE_KIND_LIST)]
    ),
    "normalize": p.GetModelMetadataResponse(model="normalize", inputs=TEXT),
    "anything": p.GetModelMetadataResponse(model="anything"),  # declares no inputs
}


def served(*only: str) -> Callable[[str], p.GetModelMetadataResponse | None]:
    return lambda model: SERVED.get(model) if not only or model in only else None


def test_unserved_models_warn_once_per_node() -> None:
    routed = switch(
        {"when": {"value": "inputs.text", "op": "==", "operand": 1}, "call": {"model": "nobody"}},
        default={"model": "nobody"},
    )
    report = validate(make(gen(), routed), served("gpt2"))
    assert report.errors == []
    assert report.warnings == ["node 's': no worker serves model 'nobody' yet"]


def test_a_served_model_whose_description_failed_is_reported_unchecked_not_unserved() -> None:
    def metadata(model: str) -> p.GetModelMetadataResponse | None:
        if model == "gpt2":
            raise Unchecked("w1 answered DEADLINE_EXCEEDED: slow")
        return None

    report = validate(make(gen()), metadata)
    assert report.errors == []
    assert report.warnings == [
        "node 'gen': model 'gpt2' could not be checked: w1 answered DEADLINE_EXCEEDED: slow"
    ]


def test_the_input_mapping_fits_the_model() -> None:
    zs = {
        "name": "zs",
        "model": "zero-shot",
        "inputs": {"text": "inputs.text", "label": "inputs.text"},
    }
    assert validate(make(zs), served()).errors == [
        "node 'zs': model 'zero-shot' takes no input 'label' (it takes text, candidate_labels)",
        "node 'zs': model 'zero-shot' needs input 'candidate_labels', which is not mapped",
    ]
    optional = p.GetModelMetadataResponse(inputs=[field("text"), field("extra", required=False)])
    assert validate(make(gen()), lambda _: optional).errors == []
    anything = {"name": "a", "model": "anything", "inputs": {"whatever": "inputs.text"}}
    assert validate(make(anything), served()).errors == []  # it declares no inputs


def test_parameters_fit_the_model() -> None:
    typo = gen(parameters={"max_new_token": 3, "do_sample": True})
    assert validate(make(typo), served()).errors == [
        "node 'gen': model 'gpt2' has no parameter 'max_new_token' (it accepts max_new_tokens, "
        "do_sample)"
    ]


def test_calls_in_maps_and_switches_are_checked_too() -> None:
    mapped = {
        "name": "m",
        "map": {"over": "inputs.text", "call": {"model": "bert", "inputs": {"x": "item"}}},
    }
    routed = switch(case(operand=1) | {"call": {"model": "bert"}}, default={"model": "bert"})
    assert validate(make(mapped, routed), served()).errors == [
        "node 'm': call model 'bert' takes no input 'x' (it takes text)",
        "node 'm': call model 'bert' needs input 'text', which is not mapped",
        "node 's': case 0 model 'bert' needs input 'text', which is not mapped",
        "node 's': default model 'bert' needs input 'text', which is not mapped",
    ]


def test_a_stream_from_a_model_that_does_not_stream_warns() -> None:
    graph = make(gen("up", model="bert"), consumer(text="up.text"))
    assert validate(graph, served()).warnings == [
        "node 'c': stream 'segment' reads 'up', but model 'bert' does not stream partial "
        "results, so it sees only the final result"
    ]
    assert validate(make(gen(), consumer(text="gen.text")), served()).warnings == []


def test_metadata_is_asked_once_per_model() -> None:
    asked: list[str] = []

    def metadata(model: str) -> p.GetModelMetadataResponse | None:
        asked.append(model)
        return SERVED.get(model)

    validate(make(gen("a"), gen("b"), gen("c")), metadata)
    assert asked == ["gpt2"]


# --- dependencies, long chains ----------------------------------------------------------


def test_dependencies() -> None:
    graph = load_graph(GRAPHS / "inference-graph.yaml")
    assert dependencies(graph) == {
        "gen1": set(),
        "gen2": set(),
        "texts": {"gen1", "gen2"},
        "scores": {"texts"},
    }
    # every kind of reference counts; inputs, item, malformed and unknown names do not
    graph = make(
        {"name": "a", "model": "m", "inputs": {"x": "inputs.text"}},
        {"name": "m", "map": {"over": "a.list", "call": {"model": "m", "inputs": {"x": "item"}}}},
        {
            "name": "s",
            "switch": {
                "cases": [{"when": {"value": "a.n", "op": ">", "operand": 1},
                           "call": {"model": "m", "inputs": {"x": "m.results"}}}],
                "default": {"model": "m", "inputs": {"x": "ghost", "y": "bad..ref"}},
            },
        },
        {"name": "v", "aggregate": {"method": "list", "values": ["s", "a.x"]}},
    )  # fmt: skip
    assert dependencies(graph) == {"a": set(), "m": {"a"}, "s": {"a", "m"}, "v": {"a", "s"}}


def test_a_long_chain_needs_no_deep_recursion() -> None:
    chain = [{"name": "n0", "model": "m", "inputs": {"x": "inputs.text"}}]
    chain += [{"name": f"n{i}", "model": "m", "inputs": {"x": f"n{i - 1}"}} for i in range(1, 3000)]
    assert errors(*chain, outputs={"end": "n2999"}) == []
    chain[0]["inputs"] = {"x": "n2999"}
    assert errors(*chain, outputs={"end": "n2999"})[0].startswith("cycle: n0 -> n1 -> n2 -> ")


# --- the examples -----------------------------------------------------------------------


def test_there_are_five_examples() -> None:
    assert [path.name for path in EXAMPLES] == [
        "ensemble.yaml",
        "inference-graph.yaml",
        "multi-model.yaml",
        "sequential.yaml",
        "streaming.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_examples_are_valid(path: Path) -> None:
    graph = load_graph(path)
    assert graph.name == path.stem
    assert validate(graph) == Report([], [])
    # nothing served yet: only warnings, one per model call
    report = validate(graph, served("none"))
    assert report.errors == []
    assert report.warnings and all("no worker serves model" in w for w in report.warnings)
    # served by models with the real tasks' signatures: each call fits its model
    assert validate(graph, served()) == Report([], [])
