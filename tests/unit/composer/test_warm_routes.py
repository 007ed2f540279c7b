"""Which routes a starting composer opens: every model call of its deployed graphs (model,
map and switch nodes, with their selectors), each waited for within the bound, and a route
that fails to open does not keep the composer from serving."""

from __future__ import annotations

from typing import Any

import pytest

from composer.spec import graph_from_dict
from composer.warm_routes import model_calls, warm_routes
from modelyard.errors import InvalidArgument

MIXED = {
    "name": "mixed",
    "inputs": {"text": "string", "texts": "list"},
    "nodes": [
        {"name": "a", "model": "sentiment", "inputs": {"text": "inputs.text"}},
        {
            "name": "b",
            "model": "gpt2",
            "selector": "device=cuda",
            "inputs": {"prompt": "inputs.text"},
        },
        {
            "name": "each",
            "map": {"over": "inputs.texts", "call": {"model": "embed", "inputs": {"text": "item"}}},
        },
        {
            "name": "pick",
            "switch": {
                "cases": [
                    {
                        "when": {"value": "a.label", "op": "==", "operand": "POSITIVE"},
                        "call": {"model": "cheer", "inputs": {"text": "inputs.text"}},
                    }
                ],
                "default": {"model": "console", "inputs": {"text": "inputs.text"}},
            },
        },
    ],
    "outputs": {"label": "a.label"},
}


class Client:
    """Records what a RoutedClient would be asked; `failing` models raise."""

    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.asked: list[tuple[str, str | None, float]] = []
        self.failing = failing

    async def wait_for_endpoints(
        self, model: str, *, timeout: float, selector: str | None = None
    ) -> tuple[Any, ...]:
        self.asked.append((model, selector, timeout))
        if model in self.failing:
            raise InvalidArgument(f"no route for {model}")
        return ()


def test_every_model_call_of_a_graph_is_found_with_its_selector() -> None:
    assert model_calls(graph_from_dict(MIXED)) == {
        ("sentiment", ""),
        ("gpt2", "device=cuda"),
        ("embed", ""),
        ("cheer", ""),
        ("console", ""),
    }


async def test_each_route_is_opened_once_within_the_bound_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(failing={"cheer"})
    graph = graph_from_dict(MIXED)
    await warm_routes(client, [graph, graph], timeout=1.5)  # type: ignore[arg-type]
    assert sorted(client.asked) == [
        ("cheer", None, 1.5),
        ("console", None, 1.5),
        ("embed", None, 1.5),
        ("gpt2", "device=cuda", 1.5),
        ("sentiment", None, 1.5),
    ]
    assert "could not open the route of 'cheer' before serving" in caplog.text
