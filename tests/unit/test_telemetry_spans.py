"""The span helpers and the sampler, on a real SDK TracerProvider recording in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from modelyard_server.telemetry.sampling import sampler
from modelyard_server.telemetry.spans import (
    BATCH_SIZE,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    QUEUE_WAIT_SECONDS,
    REPLICA,
    TIME_TO_FIRST_TOKEN_SECONDS,
    batch_span,
    current_span_context,
    current_trace_id,
    set_attributes,
    start_span,
)


class Recorded:
    def __init__(self, ratio: float = 1.0, parent_based: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler(ratio, parent_based=parent_based))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    yield recorded
    recorded.provider.shutdown()


def remote_parent(sampled: bool, trace_id: int = 0xABC, span_id: int = 0x123) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def test_a_span_is_the_child_of_the_current_one_and_current_in_its_block(
    recorded: Recorded,
) -> None:
    with start_span(recorded.tracer, "run") as run, start_span(recorded.tracer, "node") as node:
        assert trace.get_current_span() is node
        assert current_trace_id() == trace.format_trace_id(run.get_span_context().trace_id)
    spans = recorded.spans()

    assert spans["node"].parent is not None
    assert spans["node"].parent.span_id == spans["run"].context.span_id
    assert spans["node"].context.trace_id == spans["run"].context.trace_id
    assert current_trace_id() is None  # nothing current after the blocks


def test_a_failed_span_records_its_error_and_a_cancelled_one_says_cancelled(
    recorded: Recorded,
) -> None:
    with pytest.raises(ValueError, match="bad input"), start_span(recorded.tracer, "failed"):
        raise ValueError("bad input")
    with pytest.raises(asyncio.CancelledError), start_span(recorded.tracer, "cancelled"):
        raise asyncio.CancelledError
    spans = recorded.spans()

    assert spans["failed"].status.status_code is StatusCode.ERROR
    assert [e.name for e in spans["failed"].events] == ["exception"]
    assert spans["cancelled"].status.status_code is StatusCode.ERROR
    assert spans["cancelled"].status.description == "cancelled"


def test_set_attributes_records_the_given_ones_by_their_names(recorded: Recorded) -> None:
    with start_span(recorded.tracer, "predict") as span:
        set_attributes(
            span,
            model="gpt2",
            replica="10.0.0.5:50051",
            queue_wait_seconds=0.002,
            time_to_first_token_seconds=0.05,
            input_tokens=7,
            output_tokens=20,
        )

    assert dict(recorded.spans()["predict"].attributes or {}) == {
        MODEL: "gpt2",
        REPLICA: "10.0.0.5:50051",
        QUEUE_WAIT_SECONDS: 0.002,
        TIME_TO_FIRST_TOKEN_SECONDS: 0.05,
        INPUT_TOKENS: 7,
        OUTPUT_TOKENS: 20,
    }


def test_a_batch_span_starts_a_trace_linked_to_every_request_it_served(
    recorded: Recorded,
) -> None:
    queued: list[SpanContext | None] = []
    for name in ("first", "second"):
        with start_span(recorded.tracer, name):
            queued.append(current_span_context())
    queued.append(None)  # a request that came without a span still counts
    with (
        start_span(recorded.tracer, "runs the batch"),
        batch_span(recorded.tracer, "batch", queued),
    ):
        pass
    spans = recorded.spans()

    batch = spans["batch"]
    assert batch.parent is None
    assert batch.context.trace_id not in {
        s.context.trace_id for n, s in spans.items() if n != "batch"
    }
    assert [link.context for link in batch.links] == [
        spans["first"].context,
        spans["second"].context,
    ]
    assert (batch.attributes or {})[BATCH_SIZE] == 3


def test_without_a_span_there_is_no_context_to_link_or_trace_id_to_show() -> None:
    assert current_span_context() is None
    assert current_trace_id() is None


def test_an_unsampled_span_has_no_trace_id_to_show() -> None:
    recorded = Recorded(ratio=0.0)
    with start_span(recorded.tracer, "dropped"):
        assert current_span_context() is not None  # it can still be linked to
        assert current_trace_id() is None
    assert recorded.spans() == {}


@pytest.mark.parametrize(("sampled", "recorded_spans"), [(True, {"child"}), (False, set())])
def test_parent_based_follows_the_callers_decision_whatever_the_ratio(
    sampled: bool, recorded_spans: set[str]
) -> None:
    for ratio in (0.0, 1.0):
        recorded = Recorded(ratio=ratio, parent_based=True)
        parent = trace.set_span_in_context(NonRecordingSpan(remote_parent(sampled)))
        recorded.tracer.start_span("child", context=parent).end()
        assert set(recorded.spans()) == recorded_spans, ratio


def test_not_parent_based_applies_the_ratio_to_a_sampled_callers_spans_too() -> None:
    recorded = Recorded(ratio=0.0, parent_based=False)
    parent = trace.set_span_in_context(NonRecordingSpan(remote_parent(True)))
    recorded.tracer.start_span("child", context=parent).end()
    assert recorded.spans() == {}


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_a_batch_span_is_recorded_exactly_when_one_of_its_requests_is(ratio: float) -> None:
    recorded = Recorded(ratio=ratio)
    with batch_span(
        recorded.tracer,
        "served a sampled request",
        [remote_parent(False), remote_parent(True, span_id=7)],
    ):
        pass
    with batch_span(recorded.tracer, "served only unsampled ones", [remote_parent(False)]):
        pass

    assert set(recorded.spans()) == {"served a sampled request"}
