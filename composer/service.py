"""The composer's core, free of gRPC: graphs in and out of the store, validation against
what workers really serve, and runs through the engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from composer.engine import Event, RunResult, run_graph
from composer.invoker import RoutedInvoker, fetch_metadata, lookup
from composer.store import GraphStore
from composer.validation import Report, validate
from modelyard.errors import InvalidArgument
from modelyard.routed_client import RoutedClient
from modelyard.v1 import graph_pb2


def calls_of(graph: graph_pb2.Graph) -> Iterator[graph_pb2.ModelCall]:
    for node in graph.nodes:
        kind = node.WhichOneof("kind")
        if kind == "model":
            yield node.model
        elif kind == "map":
            yield node.map.call
        elif kind == "switch":
            yield from (case.call for case in node.switch.cases)
            if node.switch.HasField("default"):
                yield node.switch.default


class ComposerService:
    def __init__(self, store: GraphStore, client: RoutedClient, *, default_timeout: float) -> None:
        self.store = store
        self._client = client
        self._invoker = RoutedInvoker(client)
        self._default_timeout = default_timeout

    async def validate(self, graph: graph_pb2.Graph) -> Report:
        models = {call.model for call in calls_of(graph) if call.model}
        return validate(graph, lookup(await fetch_metadata(self._client, models)))

    async def deploy(self, graph: graph_pb2.Graph) -> list[str]:
        report = await self.validate(graph)
        if report.errors:
            raise InvalidArgument(f"graph '{graph.name}' is invalid: " + "; ".join(report.errors))
        await self.store.put(graph)
        self.store.remember(graph)
        return list(report.warnings)

    def graph_for(self, name: str, inline: graph_pb2.Graph | None) -> graph_pb2.Graph:
        if inline is None:
            return self.store.get(name)
        report = validate(inline, None)  # structure only: runs must not wait on metadata
        if report.errors:
            raise InvalidArgument("the inline graph is invalid: " + "; ".join(report.errors))
        return inline

    async def run(
        self,
        graph: graph_pb2.Graph,
        inputs: Mapping[str, Any],
        *,
        time_remaining: float | None,
        on_event: Callable[[Event], None] | None = None,
    ) -> RunResult:
        budget = self._default_timeout if time_remaining is None else time_remaining
        return await run_graph(
            graph,
            inputs,
            self._invoker,
            deadline=time.monotonic() + budget,
            on_event=on_event,
        )
