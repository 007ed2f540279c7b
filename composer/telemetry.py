"""The composer's spans and metrics: a span per graph run, per node and per routed attempt,
and the latency of runs and nodes.

    run <graph>                      graph, under the Run/RunStream call's server span
      node <name>                    graph, node, model
        attempt <model>              model, replica (worker id), attempt (1, 2, ... per call)
          /modelyard.v1.Predict/...  the call's client span; the worker's spans follow

    modelyard_composer_runs_in_flight{graph}
    modelyard_composer_run_seconds{graph, code}           code: the run's gRPC status
    modelyard_composer_node_seconds{graph, node, status}  status: ok, failed, skipped, cancelled

Inline graphs (sent with the run, not deployed) are counted as graph="<inline>" and
node="<inline>": their names are the client's choice, and must not grow the number of series.
Latencies carry the trace id as exemplar. With tracing off (no tracer) no span is made at
all, not even a no-op one, nor is an exemplar looked for (no span can be current): the
metrics are all that is left. Nor in a trace that is not
recorded (the call's span was not sampled): its children would not be either, as the
sampler decides by trace id, and each no-op span still costs microseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Generic, TypeVar

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import CollectorRegistry, Gauge, Histogram

from modelyard.attempts import Attempt
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.v1 import graph_pb2
from modelyard_server.grpc_errors import status_code_of
from modelyard_server.telemetry.exemplars import observe, seconds_histogram
from modelyard_server.telemetry.spans import set_attributes, start_span

INLINE = "<inline>"
M = TypeVar("M", Gauge, Histogram)
_NODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ComposerTelemetry:
    def __init__(
        self,
        tracer: trace.Tracer | None,
        registry: CollectorRegistry,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.tracer = tracer
        self.clock = clock
        in_flight = Gauge(
            "modelyard_composer_runs_in_flight",
            "Graph runs under way, by graph.",
            ["graph"],
            registry=registry,
        )
        run_seconds = seconds_histogram(
            "modelyard_composer_run_seconds",
            "Graph runs' latency, by graph and gRPC status code.",
            ["graph", "code"],
            registry,
            buckets=_NODE_BUCKETS,
        )
        node_seconds = seconds_histogram(
            "modelyard_composer_node_seconds",
            "Nodes' latency, by graph, node and outcome (ok, failed, skipped, cancelled).",
            ["graph", "node", "status"],
            registry,
            buckets=_NODE_BUCKETS,
        )
        self._in_flight = _Series(in_flight)
        self._run_seconds = _Series(run_seconds)
        self.node_seconds = _Series(node_seconds)
        #: The routed client's attempt spans; None with tracing off.
        self.attempts = AttemptSpans(tracer) if tracer is not None else None

    @contextmanager
    def run(self, graph: graph_pb2.Graph, *, inline: bool) -> Iterator[RunTelemetry]:
        """One run: its span (current in the block, so the nodes' spans are its children),
        counted in flight, then timed by how it ended."""
        label = INLINE if inline else graph.name
        started = self.clock.now()
        code = grpc.StatusCode.CANCELLED  # unless shown otherwise (a BaseException)
        in_flight = self._in_flight.of(label)
        in_flight.inc()
        try:
            with self._span(f"run {label}") as span:
                set_attributes(span, graph=label)
                yield RunTelemetry(self, label, inline)
                code = grpc.StatusCode.OK
        except Exception as error:
            code = status_code_of(error)
            raise
        finally:
            in_flight.dec()
            self.observe(self._run_seconds.of(label, code.name), self.clock.now() - started)

    def node(self, graph: str, node: graph_pb2.Node, label: str) -> AbstractContextManager[None]:
        """One node of a run of `graph` (its label); `label` is the node's."""
        if self.tracer is None:  # no span to make: only the latency
            return _NodeTiming(self, graph, label, node.optional)
        return self._traced_node(graph, node, label)

    @contextmanager
    def _traced_node(self, graph: str, node: graph_pb2.Node, label: str) -> Iterator[None]:
        timing = _NodeTiming(self, graph, label, node.optional)
        with timing, self._span(f"node {node.name}") as span:
            set_attributes(span, graph=graph, node=node.name, model=_model_of(node) or None)
            yield

    def observe(self, series: Histogram, seconds: float) -> None:
        """Times a run or node: with the current trace id as exemplar when tracing is on."""
        if self.tracer is None:
            series.observe(seconds)
        else:
            observe(series, seconds)

    def _span(self, name: str) -> AbstractContextManager[Span]:
        if self.tracer is None or unrecorded():
            return nullcontext(trace.INVALID_SPAN)
        return start_span(self.tracer, name)


def unrecorded() -> bool:
    """Whether the current span belongs to a trace that is not recorded (its children are
    not sampled either); False with no current span (a child would start a trace)."""
    current = trace.get_current_span()
    return current.get_span_context().is_valid and not current.is_recording()


class _Series(Generic[M]):
    """A labelled metric's series, each looked up once: `labels()` takes a lock and builds
    its key on every call, and every run and every node is counted."""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._made: dict[tuple[str, ...], M] = {}

    def of(self, *labels: str) -> M:
        series = self._made.get(labels)
        if series is None:
            series = self._made[labels] = self._metric.labels(*labels)
        return series


class _NodeTiming:
    """Times one node by how it ended: ok; skipped (an optional node) or failed, by an
    Exception; cancelled, by any other BaseException. A class rather than a generator-based
    context manager: it is entered for every node of every run."""

    def __init__(
        self, telemetry: ComposerTelemetry, graph: str, label: str, optional: bool
    ) -> None:
        self._telemetry = telemetry
        self._graph, self._label, self._optional = graph, label, optional
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = self._telemetry.clock.now()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            status = "ok"
        elif isinstance(exc, Exception):
            status = "skipped" if self._optional else "failed"
        else:
            status = "cancelled"
        telemetry = self._telemetry
        series = telemetry.node_seconds.of(self._graph, self._label, status)
        telemetry.observe(series, telemetry.clock.now() - self._started)


class RunTelemetry:
    """What the engine reports of one run's nodes (`composer.engine.NodeObserver`)."""

    def __init__(self, telemetry: ComposerTelemetry, graph: str, inline: bool) -> None:
        self._telemetry = telemetry
        self._graph = graph
        self._inline = inline

    def node(self, node: graph_pb2.Node) -> AbstractContextManager[object]:
        """Around the node's work: its span (current: its calls' spans are its children),
        then its latency by outcome."""
        label = INLINE if self._inline else node.name
        return self._telemetry.node(self._graph, node, label)


class AttemptSpans:
    """A span per routed attempt (`modelyard.attempts.AttemptTracker`), child of the node's."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def track(self, attempt: Attempt) -> _AttemptSpan:
        return _AttemptSpan(self._tracer, attempt)


class _AttemptSpan:
    def __init__(self, tracer: trace.Tracer, attempt: Attempt) -> None:
        self._tracer = tracer
        self._attempt = attempt
        self._span: Span = trace.INVALID_SPAN

    def __enter__(self) -> _AttemptSpan:
        attempt = self._attempt
        if unrecorded():
            return self  # INVALID_SPAN: nothing to record
        # started now but made current only by `active`: the attempt of a stream lasts
        # across yields, where a current span would leak into the caller's code
        self._span = self._tracer.start_span(f"attempt {attempt.model}")
        set_attributes(
            self._span, model=attempt.model, replica=attempt.worker_id, attempt=attempt.number
        )
        return self

    def active(self) -> AbstractContextManager[object]:
        if not self._span.is_recording():
            return nullcontext()
        return trace.use_span(self._span, end_on_exit=False, record_exception=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, GeneratorExit):  # GeneratorExit: read enough
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, _describe(exc)))
        self._span.end()


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return getattr(error, "message", None) or type(error).__name__


def _model_of(node: graph_pb2.Node) -> str:
    kind = node.WhichOneof("kind")
    if kind == "model":
        return node.model.model
    if kind == "map":
        return node.map.call.model
    return ""
