"""Where a graph's errors are, for programs: validation's field path for every error, and a
run's failing node passing a worker's error on under the node's path, its reason kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from composer.engine import run_graph
from composer.validation import validate
from modelyard.client import Prediction, StreamEvent
from modelyard.errors import InvalidArgument, ModelyardError, Reason
from modelyard.graph_spec import graph_from_dict


class Refusing:
    """An invoker whose `refused` model refuses every call with `error`; others echo."""

    def __init__(self, refused: str, error: ModelyardError) -> None:
        self.refused, self.error = refused, error

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
        hedge_after: float | None = None,
    ) -> Prediction:
        if model == self.refused:
            raise self.error
        return Prediction(model, "1", dict(inputs))

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
    ) -> AsyncIterator[StreamEvent]:
        raise AssertionError("no streams here")


def test_every_validation_error_names_its_field_in_the_graph_files_form() -> None:
    graph = graph_from_dict(
        {
            "name": "g",
            "inputs": {"x": {"kind": "int", "default": "seven"}},
            "nodes": [
                {"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}, "retries": -1},
                {"name": "each", "map": {"over": "a.items", "call": {"inputs": {"t": "item"}}}},
                {
                    "name": "pick",
                    "switch": {
                        "cases": [
                            {
                                "when": {"value": "a.x", "op": "==", "operand": 1},
                                "call": {"model": "echo", "inputs": {"y": "gen3.y"}},
                            }
                        ]
                    },
                },
                {"name": "vote", "aggregate": {"method": "majority_vote"}},
            ],
            "outputs": {"x": "a.x", "bad": "nowhere.x", "e": "each", "p": "pick", "v": "vote"},
        }
    )
    report = validate(graph)
    assert [v.field for v in report.violations] == [
        "inputs.x.default",
        "nodes[0].retries",
        "nodes[1].map.call.model",
        "nodes[2].switch.cases[0].call.inputs.y",
        "nodes[3].aggregate.values",
        "outputs.bad",
    ]
    assert [v.description for v in report.violations] == report.errors


def test_a_cycle_is_blamed_on_the_nodes() -> None:
    graph = graph_from_dict(
        {
            "name": "loop",
            "nodes": [
                {"name": "a", "model": "echo", "inputs": {"x": "b.x"}},
                {"name": "b", "model": "echo", "inputs": {"x": "a.x"}},
            ],
            "outputs": {"x": "b.x"},
        }
    )
    assert [v.field for v in validate(graph).violations] == ["nodes"]


WORKER_ERROR = InvalidArgument(
    "input 'text' must be a string, got an integer",
    reason=Reason.INPUT_WRONG_KIND,
    field="inputs.text",
)


@pytest.mark.parametrize(
    ("node", "field", "message"),
    [
        (
            {"name": "cls", "model": "picky", "inputs": {"text": "inputs.x"}},
            "nodes[1].inputs.text",
            "node 'cls': input 'text' must be a string, got an integer",
        ),
        (
            {"name": "cls", "map": {"over": "first.xs", "call": {"model": "picky",
             "inputs": {"text": "item"}}}},
            "nodes[1].map.call.inputs.text",
            "node 'cls': element 0: input 'text' must be a string, got an integer",
        ),
        (
            {"name": "cls", "switch": {"cases": [], "default": {"model": "picky",
             "inputs": {"text": "inputs.x"}}}},
            "nodes[1].switch.default.inputs.text",
            "node 'cls': input 'text' must be a string, got an integer",
        ),
    ],
)  # fmt: skip
async def test_a_workers_error_keeps_its_reason_under_the_failing_nodes_path(
    node: dict[str, Any], field: str, message: str
) -> None:
    graph = graph_from_dict(
        {
            "name": "g",
            "inputs": {"x": "any"},
            "nodes": [{"name": "first", "model": "echo", "inputs": {"xs": "inputs.x"}}, node],
            "outputs": {"out": "cls"},
        }
    )
    with pytest.raises(InvalidArgument) as caught:
        await run_graph(graph, {"x": [3]}, Refusing("picky", WORKER_ERROR))
    error = caught.value
    assert (error.message, error.field, error.reason) == (message, field, "INPUT_WRONG_KIND")
    assert error.field_violations[0].description == WORKER_ERROR.message
    assert error.metadata == {"node": "cls"}


async def test_a_reference_that_does_not_resolve_at_run_time_names_the_input_it_feeds() -> None:
    graph = graph_from_dict(
        {
            "name": "g",
            "inputs": {"x": "any"},
            "nodes": [
                {"name": "first", "model": "echo", "inputs": {"x": "inputs.x"}},
                {"name": "second", "model": "echo", "inputs": {"text": "first.x.label"}},
            ],
            "outputs": {"out": "second"},
        }
    )
    with pytest.raises(InvalidArgument) as caught:
        await run_graph(graph, {"x": {"score": 1}}, Refusing("nobody", WORKER_ERROR))
    assert caught.value.message.startswith("node 'second': input 'text': ")
    assert caught.value.field == "nodes[1].inputs.text"


@pytest.mark.parametrize(
    ("inputs", "reason", "field"),
    [
        ({}, "INPUT_MISSING", "inputs.x"),
        ({"x": 1, "y": 2}, "INPUT_UNKNOWN", "inputs.y"),
        ({"x": "1"}, "INPUT_WRONG_KIND", "inputs.x"),
    ],
)
async def test_a_runs_inputs_name_their_field(
    inputs: dict[str, Any], reason: str, field: str
) -> None:
    graph = graph_from_dict(
        {
            "name": "g",
            "inputs": {"x": "int"},
            "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}],
            "outputs": {"x": "a.x"},
        }
    )
    with pytest.raises(InvalidArgument) as caught:
        await run_graph(graph, inputs, Refusing("nobody", WORKER_ERROR))
    assert (caught.value.reason, caught.value.field) == (reason, field)
