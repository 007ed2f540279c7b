"""A graph's plan (composer.plan): made once per deployed graph object and shared by its
runs, made again when the graph is deployed again, never kept when the graph is invalid."""

from __future__ import annotations

import re

import pytest

from composer.plan import Plans
from composer.spec import graph_from_dict
from modelyard.errors import InvalidArgument
from modelyard.v1 import graph_pb2


def chain(second_reads: str) -> graph_pb2.Graph:
    return graph_from_dict(
        {
            "name": "chain",
            "inputs": {"text": "string"},
            "nodes": [
                {"name": "a", "model": "echo", "inputs": {"text": "inputs.text"}},
                {"name": "b", "model": "echo", "inputs": {"text": second_reads}},
            ],
            "outputs": {"text": "b.text"},
        }
    )


def test_runs_of_one_deployed_graph_share_its_plan() -> None:
    plans, graph = Plans(), chain("a.text")
    plan = plans.of(graph)
    assert plans.of(graph) is plan
    assert plan.deps == {"a": set(), "b": {"a"}}


def test_a_graph_deployed_again_gets_a_plan_of_its_own() -> None:
    plans = Plans()
    first = plans.of(chain("a.text"))
    again = plans.of(chain("inputs.text"))  # the same name, a new object: a new deployment
    assert again is not first
    assert again.deps == {"a": set(), "b": set()}


def test_an_invalid_graph_raises_on_every_run() -> None:
    plans, graph = Plans(), chain("nowhere.text")
    for _ in range(2):
        with pytest.raises(InvalidArgument, match=re.escape("'nowhere.text' names no node")):
            plans.of(graph)


def test_a_graph_deployed_again_checks_runs_against_its_new_inputs() -> None:
    plans, first = Plans(), chain("a.text")
    assert plans.inputs_of(first).check({"text": "hi"}) == {"text": "hi"}
    again = graph_pb2.Graph()
    again.CopyFrom(first)
    again.inputs[0].name = "prompt"  # the new version takes another input
    with pytest.raises(InvalidArgument, match="unknown input 'text'; graph 'chain' takes: prompt"):
        plans.inputs_of(again).check({"text": "hi"})
    assert plans.inputs_of(again).check({"prompt": "hi"}) == {"prompt": "hi"}


def test_a_default_is_made_anew_for_every_run() -> None:
    graph = graph_from_dict(
        {
            "name": "tagged",
            "inputs": {"tags": {"kind": "list", "required": False, "default": ["a"]}},
            "nodes": [{"name": "e", "model": "echo", "inputs": {"tags": "inputs.tags"}}],
            "outputs": {"tags": "e.tags"},
        }
    )
    inputs = Plans().inputs_of(graph)
    first = inputs.check({})
    first["tags"].append("changed by a run")
    assert inputs.check({}) == {"tags": ["a"]}
