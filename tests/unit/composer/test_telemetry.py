"""The composer's run, node and attempt spans and its run and node metrics
(composer.telemetry), through the real engine against an in-process invoker, with spans
kept in memory and time on a FakeClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry

from composer.engine import run_graph
from composer.spec import graph_from_dict
from composer.telemetry import INLINE, ComposerTelemetry
from modelyard.attempts import Attempt
from modelyard.client import Prediction, StreamEvent
from modelyard.errors import InvalidArgument, ModelyardError
from modelyard.v1 import graph_pb2
from tests.support.clock import FakeClock

GRAPH = {
    "name": "g",
    "inputs": {"x": "int"},
    "nodes": [
        {"name": "a", "model": "slow", "inputs": {"x": "inputs.x"}},
        {"name": "b", "model": "broken", "inputs": {"x": "inputs.x"}, "optional": True},
        {"name": "c", "model": "echo", "inputs": {"x": "a.x"}},
    ],
    "outputs": {"x": "c.x"},
}


class Invoker:
    """echo answers at once, slow after half a second of the test's clock, broken fails,
    hang never answers."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

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
        if model == "broken":
            raise InvalidArgument("broken on purpose")
        if model == "slow":
            await self.clock.sleep(0.5)
        if model == "hang":
            await asyncio.Event().wait()
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


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.registry = CollectorRegistry()
        self.clock = FakeClock()
        self.composer = ComposerTelemetry(
            provider.get_tracer("test"), self.registry, clock=self.clock
        )

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


async def run(telemetry: Telemetry, graph: graph_pb2.Graph, *, inline: bool = False) -> Any:
    clock = telemetry.clock

    async def observed() -> Any:
        with telemetry.composer.run(graph, inline=inline) as observer:
            return await run_graph(graph, {"x": 1}, Invoker(clock), clock=clock, observer=observer)

    running = asyncio.ensure_future(observed())
    while not running.done():
        await clock.advance(0.25)
    return running.result()


async def test_a_run_is_one_span_with_a_child_span_per_node() -> None:
    telemetry = Telemetry()
    result = await run(telemetry, graph_from_dict(GRAPH))
    assert result.outputs == {"x": 1}
    spans = telemetry.spans()
    assert set(spans) == {"run g", "node a", "node b", "node c"}
    root = spans["run g"]
    assert root.parent is None and root.attributes == {"modelyard.graph": "g"}
    for name, model in (("a", "slow"), ("b", "broken"), ("c", "echo")):
        node = spans[f"node {name}"]
        assert node.parent is not None and node.parent.span_id == root.context.span_id
        assert node.context.trace_id == root.context.trace_id
        assert node.attributes == {
            "modelyard.graph": "g",
            "modelyard.node": name,
            "modelyard.model": model,
        }
    # the optional node failed: its span says so, the run's does not
    assert spans["node b"].status.status_code is StatusCode.ERROR
    assert root.status.status_code is StatusCode.UNSET


async def test_runs_and_nodes_are_timed_by_graph_node_and_outcome() -> None:
    telemetry = Telemetry()
    await run(telemetry, graph_from_dict(GRAPH))
    node = "modelyard_composer_node_seconds"
    assert telemetry.sample(f"{node}_sum", graph="g", node="a", status="ok") == 0.5
    assert telemetry.sample(f"{node}_count", graph="g", node="b", status="skipped") == 1
    assert telemetry.sample(f"{node}_count", graph="g", node="c", status="ok") == 1
    run_seconds = "modelyard_composer_run_seconds"
    assert telemetry.sample(f"{run_seconds}_sum", graph="g", code="OK") == 0.5
    assert telemetry.sample("modelyard_composer_runs_in_flight", graph="g") == 0


async def test_a_failed_run_is_timed_under_its_status_code() -> None:
    telemetry = Telemetry()
    failing = {
        **GRAPH,
        "nodes": [{"name": "b", "model": "broken", "inputs": {"x": "inputs.x"}}],
        "outputs": {"x": "b.x"},
    }
    with pytest.raises(ModelyardError):
        await run(telemetry, graph_from_dict(failing))
    runs = "modelyard_composer_run_seconds_count"
    assert telemetry.sample(runs, graph="g", code="INVALID_ARGUMENT") == 1
    nodes = "modelyard_composer_node_seconds_count"
    assert telemetry.sample(nodes, graph="g", node="b", status="failed") == 1
    assert telemetry.spans()["run g"].status.status_code is StatusCode.ERROR


async def test_inline_graphs_count_under_one_label_for_graph_and_node() -> None:
    telemetry = Telemetry()
    await run(telemetry, graph_from_dict(GRAPH), inline=True)
    nodes = "modelyard_composer_node_seconds_count"
    assert telemetry.sample(nodes, graph=INLINE, node=INLINE, status="ok") == 2
    assert telemetry.sample(nodes, graph=INLINE, node=INLINE, status="skipped") == 1
    assert telemetry.sample(nodes, graph="g", node="a", status="ok") is None
    assert "run <inline>" in telemetry.spans()


async def test_a_cancelled_run_leaves_nothing_in_flight_and_counts_as_cancelled() -> None:
    telemetry = Telemetry()
    hanging = graph_from_dict(
        {**GRAPH, "nodes": [{"name": "h", "model": "hang", "inputs": {"x": "inputs.x"}}],
         "outputs": {"x": "h.x"}}
    )  # fmt: skip
    started = asyncio.Event()

    async def go() -> None:
        with telemetry.composer.run(hanging, inline=False) as observer:
            started.set()
            await run_graph(hanging, {"x": 1}, Invoker(telemetry.clock), observer=observer)

    task = asyncio.ensure_future(go())
    await started.wait()
    assert telemetry.sample("modelyard_composer_runs_in_flight", graph="g") == 1
    await asyncio.sleep(0)  # the node starts
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert telemetry.sample("modelyard_composer_runs_in_flight", graph="g") == 0
    runs = "modelyard_composer_run_seconds_count"
    assert telemetry.sample(runs, graph="g", code="CANCELLED") == 1
    spans = telemetry.spans()
    assert spans["run g"].status.description == "cancelled"
    nodes = "modelyard_composer_node_seconds_count"
    assert telemetry.sample(nodes, graph="g", node="h", status="cancelled") == 1


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="worker going away",
        )


def test_an_attempt_is_a_span_current_only_while_active_and_ends_with_its_outcome() -> None:
    telemetry = Telemetry()
    tracer, attempts = telemetry.composer.tracer, telemetry.composer.attempts
    assert tracer is not None and attempts is not None  # tracing is on
    with tracer.start_as_current_span("node n") as node:
        first = attempts.track(Attempt("gpt2", "w1", "10.0.0.1:50051", 1, streaming=False))
        with first.__enter__().active(), tracer.start_as_current_span("the call"):
            pass
        first.__exit__(Unavailable, Unavailable(), None)
        second = attempts.track(Attempt("gpt2", "w2", "10.0.0.2:50051", 2, streaming=True))
        second.__enter__()
        second.__exit__(GeneratorExit, GeneratorExit(), None)  # a stream the caller left
    finished = telemetry.exporter.get_finished_spans()
    call, failed, left = (s for s in finished if s.name != "node n")
    assert [s.name for s in (call, failed, left)] == ["the call", "attempt gpt2", "attempt gpt2"]
    assert call.parent is not None and call.parent.span_id == failed.context.span_id
    for span in (failed, left):
        assert span.parent is not None and span.parent.span_id == node.get_span_context().span_id
    assert failed.attributes == {
        "modelyard.model": "gpt2",
        "modelyard.replica": "w1",
        "modelyard.attempt": 1,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "UNAVAILABLE: worker going away"
    assert left.attributes is not None and left.attributes["modelyard.attempt"] == 2
    assert left.status.status_code is StatusCode.UNSET


class CountingTracer(trace.NoOpTracer):
    """Counts the spans asked of it."""

    def __init__(self) -> None:
        self.started = 0

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        self.started += 1  # start_as_current_span comes here too
        return super().start_span(*args, **kwargs)


def observed_call(composer: ComposerTelemetry) -> None:
    """A one-node run making one attempt, through the composer's telemetry."""
    graph = graph_from_dict(
        {"name": "one", "inputs": {"x": "int"}, "outputs": {"x": "a.x"},
         "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}]}
    )  # fmt: skip
    attempts = composer.attempts
    assert attempts is not None
    attempt = Attempt("echo", "w1", "10.0.0.1:50051", 1, streaming=False)
    with (
        composer.run(graph, inline=False) as observer,
        observer.node(graph.nodes[0]),
        attempts.track(attempt) as tracked,
        tracked.active(),
    ):
        pass


def test_a_run_in_a_trace_nobody_records_asks_for_no_span_at_all() -> None:
    # the call's span was not sampled: its children would not be (the sampler decides by
    # trace id), and each no-op span costs microseconds on every call
    counting = CountingTracer()
    composer = ComposerTelemetry(counting, CollectorRegistry(), clock=FakeClock())
    unsampled = SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unsampled)):
        observed_call(composer)
    assert counting.started == 0
    observed_call(composer)  # no current span: a trace starts here
    assert counting.started == 3  # the run, the node, the attempt
