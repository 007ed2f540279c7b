"""References (composer.references): parsing them, resolving them, and where each kind of
node makes them — the one answer validation, the run's plan and drawing share."""

from __future__ import annotations

from typing import Any

import pytest

from composer.references import (
    Missing,
    Ref,
    calls,
    parse_ref,
    referenced_nodes,
    resolve,
    uses,
)
from composer.spec import graph_from_dict
from modelyard.errors import InvalidArgument
from modelyard.v1 import graph_pb2 as g


def node(spec: dict[str, Any]) -> g.Node:
    graph = graph_from_dict({"name": "t", "nodes": [spec], "outputs": {"o": "inputs.x"}})
    return graph.nodes[0]


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("inputs.prompt", Ref("input", "prompt")),
        ("gen", Ref("node", "gen")),
        ("cls.scores.0", Ref("node", "cls", ("scores", "0"))),
        ("item", Ref("item", "")),
        ("item.text", Ref("item", "", ("text",))),
    ],
)
def test_parse_ref_and_back(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "reference '' is malformed"),
        ("gen..text", "reference 'gen..text' is malformed"),
        ("gen.te xt", "reference 'gen.te xt' is malformed"),
        ("inputs", "reference 'inputs' names no input"),
    ],
)
def test_malformed_references_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        parse_ref(text)


def test_resolve_walks_fields_and_indexes() -> None:
    nodes = {"cls": {"scores": [0.1, 0.9]}}
    assert resolve(parse_ref("cls.scores.1"), {}, nodes) == 0.9
    assert resolve(parse_ref("inputs.x"), {"x": 3}, {}) == 3
    assert resolve(parse_ref("item.text"), {}, {}, item={"text": "hi"}) == "hi"
    with pytest.raises(Missing, match=r"^cls.label: no field 'label' \(fields: scores\)$"):
        resolve(parse_ref("cls.label"), {}, nodes)
    with pytest.raises(Missing, match="index 2 is out of range for a list of 2"):
        resolve(parse_ref("cls.scores.2"), {}, nodes)
    with pytest.raises(Missing, match="cannot take 'x' of float"):
        resolve(parse_ref("cls.scores.0.x"), {}, nodes)


def test_uses_of_each_kind_of_node_in_order() -> None:
    model = node({"name": "m", "model": "gpt2", "inputs": {"b": "inputs.x", "a": "gen.text"}})
    assert [(u.text, u.role, u.holder) for u in uses(model)] == [
        ("gen.text", "input", "input 'a'"),
        ("inputs.x", "input", "input 'b'"),
    ]
    assert all(u.call == model.model and not u.item_ok for u in uses(model))

    call = {"model": "cls", "inputs": {"t": "item"}}
    mapped = node({"name": "m", "map": {"over": "gen.list", "call": call}})
    assert [(u.text, u.role, u.holder, u.item_ok) for u in uses(mapped)] == [
        ("gen.list", "over", "'over'", False),
        ("item", "input", "input 't'", True),
    ]

    switch = node(
        {
            "name": "s",
            "switch": {
                "cases": [
                    {"when": {"value": "cls.label", "op": "==", "operand": "a"},
                     "call": {"model": "a", "inputs": {"t": "inputs.x"}}},
                    {"when": {"value": "cls.score", "op": ">", "operand": 1},
                     "call": {"model": "b", "inputs": {"t": "gen"}}},
                ],
                "default": {"model": "c", "inputs": {"t": "inputs.y"}},
            },
        }
    )  # fmt: skip
    assert [(u.text, u.role, u.holder) for u in uses(switch)] == [
        ("cls.label", "condition", "case 0 condition"),
        ("inputs.x", "input", "case 0 input 't'"),
        ("cls.score", "condition", "case 1 condition"),
        ("gen", "input", "case 1 input 't'"),
        ("inputs.y", "input", "default input 't'"),
    ]
    assert [u.call.model for u in uses(switch) if u.call is not None] == ["a", "b", "c"]

    vote = node({"name": "v", "aggregate": {"method": "list", "values": ["a", "b.label"]}})
    assert [(u.text, u.role, u.holder, u.call) for u in uses(vote)] == [
        ("a", "value", "value 0", None),
        ("b.label", "value", "value 1", None),
    ]


def test_an_unset_over_or_condition_is_no_reference() -> None:
    mapped = g.Node(name="m", map=g.MapNode(call=g.ModelCall(model="cls")))
    assert list(uses(mapped)) == []
    switch = g.Node(name="s", switch=g.SwitchNode(cases=[g.SwitchCase()]))
    assert list(uses(switch)) == []


def test_calls_are_the_model_calls_a_node_may_make() -> None:
    one = g.ModelCall(model="one")
    two = g.ModelCall(model="two")
    assert list(calls(g.Node(model=one))) == [one]
    assert list(calls(g.Node(map=g.MapNode(call=one)))) == [one]
    switch = g.SwitchNode(cases=[g.SwitchCase(call=one)])
    assert list(calls(g.Node(switch=switch))) == [one]  # no default set: none called
    switch.default.CopyFrom(two)
    assert list(calls(g.Node(switch=switch))) == [one, two]
    assert list(calls(g.Node(aggregate=g.AggregateNode(values=["a"])))) == []


def test_referenced_nodes_once_each_first_seen_first() -> None:
    texts = ["b.text", "inputs.x", "a", "item.t", "b", "bad..ref", "a.label"]
    assert referenced_nodes(texts) == ["b", "a"]
