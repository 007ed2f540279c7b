"""The composer's core, free of gRPC: graphs in and out of the store, validation against
what workers really serve, and runs through the engine (composer.servicer translates)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import nullcontext
from typing import Any

from composer.admission import Admission
from composer.engine import Event, RunResult, run_graph
from composer.invoker import RoutedInvoker, fetch_metadata, lookup, served_models
from composer.plan import Plans
from composer.references import calls
from composer.store import GraphStore
from composer.telemetry import ComposerTelemetry
from composer.validation import Report, validate
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import InvalidArgument, Reason
from modelyard.names import check_name
from modelyard.routed_client import RoutedClient
from modelyard.v1 import graph_pb2


class ComposerService:
    """`clock` times the runs: their deadlines (the caller's time remaining, else
    `default_timeout`) and their timelines. `telemetry` makes the runs' and nodes' spans
    and metrics (none: neither). `admission` bounds the runs in flight: past it a run is
    refused at once (RESOURCE_EXHAUSTED, `composer.admission.AtLimit`)."""

    def __init__(
        self,
        store: GraphStore,
        client: RoutedClient,
        *,
        default_timeout: float,
        admission: Admission,
        clock: Clock = SYSTEM_CLOCK,
        telemetry: ComposerTelemetry | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._telemetry = telemetry
        self._invoker = RoutedInvoker(client)
        self._default_timeout = default_timeout
        self._clock = clock
        self._admission = admission
        self._plans = Plans()  # the deployed graphs' plans, each made on its first run

    async def validate(self, graph: graph_pb2.Graph) -> Report:
        models = {call.model for node in graph.nodes for call in calls(node) if call.model}
        found = await fetch_metadata(self._client, models)
        # the models served, for a did-you-mean, only when one of the graph's is not
        served = await served_models(self._client) if models - found.keys() else set()
        return validate(graph, lookup(found), served)

    async def deploy(self, graph: graph_pb2.Graph) -> list[str]:
        """Stores a valid graph (runnable on this replica at once); its warnings."""
        check_name("graph", graph.name)  # before a message, a log line or etcd sees it
        report = await self.validate(graph)
        if report.errors:
            raise _invalid(f"graph '{graph.name}' is invalid: ", report)
        revision = await self._store.put(graph)
        self._store.remember(graph, revision)
        return list(report.warnings)

    def get(self, name: str) -> graph_pb2.Graph:
        return self._store.get(name)

    def list(self) -> builtins.list[graph_pb2.Graph]:
        return self._store.list()

    async def delete(self, name: str) -> None:
        await self._store.delete(name)

    async def run(
        self,
        name: str,
        inline: graph_pb2.Graph | None,
        inputs: Mapping[str, Any],
        *,
        time_remaining: float | None,
    ) -> RunResult:
        """Runs the deployed graph `name`, or `inline` when given, within the caller's
        `time_remaining` in seconds (None: the default timeout)."""
        graph = self._graph_for(name, inline)
        with self._admission.admit():
            return await self._run(graph, inline is not None, inputs, time_remaining, None)

    async def run_stream(
        self,
        name: str,
        inline: graph_pb2.Graph | None,
        inputs: Mapping[str, Any],
        *,
        time_remaining: float | None,
    ) -> AsyncGenerator[Event | RunResult, None]:
        """`run`, as its events while it goes and then its result. Closing the iterator
        early (the caller went away) cancels the run and every node call in it."""
        graph = self._graph_for(name, inline)  # NOT_FOUND before anything runs
        with self._admission.admit():  # held until the stream ends, however it ends
            events: asyncio.Queue[Event | None] = asyncio.Queue()
            run = asyncio.create_task(
                self._run(graph, inline is not None, inputs, time_remaining, events.put_nowait)
            )
            run.add_done_callback(lambda _: events.put_nowait(None))
            try:
                while (event := await events.get()) is not None:
                    yield event
                yield run.result()
            finally:
                run.cancel()  # a no-op once it is done
                with contextlib.suppress(BaseException):
                    await run

    async def _run(
        self,
        graph: graph_pb2.Graph,
        inline: bool,
        inputs: Mapping[str, Any],
        time_remaining: float | None,
        on_event: Callable[[Event], None] | None,
    ) -> RunResult:
        deadline = self._clock.now() + (
            self._default_timeout if time_remaining is None else time_remaining
        )
        observed = (
            nullcontext(None)
            if self._telemetry is None
            else self._telemetry.run(graph, inline=inline)
        )
        with observed as observer:
            return await run_graph(
                graph,
                inputs,
                self._invoker,
                deadline=deadline,
                on_event=on_event,
                clock=self._clock,
                observer=observer,
                plans=None if inline else self._plans,
            )

    def _graph_for(self, name: str, inline: graph_pb2.Graph | None) -> graph_pb2.Graph:
        if inline is None:
            return self._store.get(check_name("graph", name))
        report = validate(inline, None)  # structure only: runs must not wait on metadata
        if report.errors:
            raise _invalid("the inline graph is invalid: ", report)
        return inline


def _invalid(what: str, report: Report) -> InvalidArgument:
    """GRAPH_INVALID: every error in the message, and each as a field violation."""
    message = what + "; ".join(report.errors)
    return InvalidArgument(message, reason=Reason.GRAPH_INVALID, field_violations=report.violations)
