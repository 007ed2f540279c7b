"""The spans modelyard makes itself, beside the gRPC calls' own: a graph run, a node, a
routed attempt, a worker's queue wait and inference, a batch.

    with start_span(tracing.tracer, "node", attributes={NODE: "summarize"}) as span:
        reply = await client.predict(...)          # the call's span is this one's child
        set_attributes(span, model="gpt2", replica=address)

A span started here is current until its block ends, so do not hold one open across a
`yield` in an async generator: between two `yield`s the consumer's code runs with the
generator's span current (its own spans would hang under it), and a generator closed from
another task cannot detach it ("Failed to detach context"). In a generator, start the span
around each step that awaits, or start it with `tracer.start_span` and make it current only
around such steps (`opentelemetry.trace.use_span(span, end_on_exit=False)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode
from opentelemetry.util.types import Attributes

# Attribute names. Durations are in seconds, and say so, as the metrics do.
MODEL = "modelyard.model"
REPLICA = "modelyard.replica"
DEVICE = "modelyard.device"
GRAPH = "modelyard.graph"
NODE = "modelyard.node"
ATTEMPT = "modelyard.attempt"
BATCH_SIZE = "modelyard.batch_size"
QUEUE_WAIT_SECONDS = "modelyard.queue_wait_seconds"
TIME_TO_FIRST_TOKEN_SECONDS = "modelyard.time_to_first_token_seconds"
# OpenTelemetry's generative-AI names, which trace backends know
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"


@contextmanager
def start_span(tracer: trace.Tracer, name: str, *, attributes: Attributes = None) -> Iterator[Span]:
    """A span, child of the current one (or of the incoming call's), current in the block.
    An exception marks it failed; a cancellation marks it failed as "cancelled" (upstream
    leaves a cancelled span looking successful: CancelledError is no Exception)."""
    with tracer.start_as_current_span(name, attributes=attributes) as span, _cancellation(span):
        yield span


@contextmanager
def batch_span(
    tracer: trace.Tracer,
    name: str,
    request_contexts: Iterable[SpanContext | None],
    *,
    attributes: Attributes = None,
) -> Iterator[Span]:
    """A span for one batch, with a link to the span of every request it served (the
    OpenTelemetry pattern for batches), current in the block. It starts a trace of its
    own: a batch belongs to no one request, and must not end up a child of whichever
    request happened to start the batching task. It records its size, and is recorded
    when any of its requests is (`telemetry.sampling`). `request_contexts` are what
    `current_span_context()` gave each request when it was queued; None for a request
    that had no span."""
    contexts = list(request_contexts)
    links = [Link(c) for c in contexts if c is not None and c.is_valid]
    with (
        tracer.start_as_current_span(
            name,
            context=Context(),  # no parent: a new trace
            attributes={**(attributes or {}), BATCH_SIZE: len(contexts)},
            links=links,
        ) as span,
        _cancellation(span),
    ):
        yield span


def set_attributes(
    span: Span,
    *,
    model: str | None = None,
    replica: str | None = None,
    device: str | None = None,
    graph: str | None = None,
    node: str | None = None,
    attempt: int | None = None,
    batch_size: int | None = None,
    queue_wait_seconds: float | None = None,
    time_to_first_token_seconds: float | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> None:
    """Records the given ones under modelyard's attribute names (a no-op on a span that is
    not recording: tracing off, or not sampled)."""
    if not span.is_recording():
        return
    given = {
        MODEL: model,
        REPLICA: replica,
        DEVICE: device,
        GRAPH: graph,
        NODE: node,
        ATTEMPT: attempt,
        BATCH_SIZE: batch_size,
        QUEUE_WAIT_SECONDS: queue_wait_seconds,
        TIME_TO_FIRST_TOKEN_SECONDS: time_to_first_token_seconds,
        INPUT_TOKENS: input_tokens,
        OUTPUT_TOKENS: output_tokens,
    }
    span.set_attributes({name: value for name, value in given.items() if value is not None})


def current_span_context() -> SpanContext | None:
    """The current span's identity, to link to later (a batch span); None without one."""
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits, as Jaeger shows and searches it; None with
    no current span, or one that is not sampled (nobody could look that trace up)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return trace.format_trace_id(context.trace_id)


#: The metadata key under which a server tells its caller which trace its call is in: W3C
#: Trace Context Level 2's `traceresponse` (the caller may not trace at all, or not be
#: sampled, and still wants the id to look the call up).
TRACE_RESPONSE = "traceresponse"


def trace_response() -> str | None:
    """The current span as a `traceresponse` value (version-trace id-span id-flags, as
    `traceparent`); None with no current span, or one that is not sampled."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    span_id = trace.format_span_id(context.span_id)
    return f"00-{trace.format_trace_id(context.trace_id)}-{span_id}-{context.trace_flags:02x}"


@contextmanager
def _cancellation(span: Span) -> Iterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        raise


def untraced_calls(tracer: trace.Tracer | None) -> Callable[[], bool]:
    """Whether the call about to be made is untraced: always, with tracing off; else when
    the current span records nothing (not sampled). For `RoutedClient(multiplex=...)`:
    a traced call stays unary, where the gRPC instrumentation gives it its spans."""
    if tracer is None:
        return _always
    return _not_recording


def _always() -> bool:
    return True


def _not_recording() -> bool:
    return not trace.get_current_span().is_recording()
