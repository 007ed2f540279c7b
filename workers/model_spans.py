"""The spans of a request's way through its model's runner (`workers.runner`):

    /modelyard.v1.Predict/Predict     the call's span: modelyard.batch_size and
      queue wait                      modelyard.queue_wait_seconds on it; arrival at the
      inference                       runner to the start of its model call, then that call
    batch <model>                     one per model call of a batch: a trace of its own,
                                      linked to the call span of every request it served

A batched request waits, and is answered, in the batch's task; its queue wait and inference
spans are made afterwards in the request's own task, from the times the batch recorded
(the runner's clock, placed on the wall clock the trace backend shows). A request whose
call span is not recording (not sampled) costs a small record and nothing else; with
tracing off (no tracer) batches make no span either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span

from modelyard.clock import Clock
from modelyard_server.telemetry.spans import MODEL, batch_span, set_attributes


@dataclass(slots=True)
class Served:
    """One request's way through the runner, filled in as it goes."""

    span: Span  # the call's, current where the request arrived
    queued_at: float
    started_at: float | None = None  # its model call started
    ended_at: float | None = None  # its model call ended
    batch_size: int = 1


class ModelSpans:
    def __init__(self, tracer: trace.Tracer | None, model: str, clock: Clock) -> None:
        self._tracer = tracer
        self._model = model
        self._clock = clock

    def arrived(self) -> Served:
        """In the request's task, as it reaches the runner."""
        return Served(trace.get_current_span(), self._clock.now())

    def started(self, served: Served, batch_size: int = 1) -> None:
        served.started_at = self._clock.now()
        served.batch_size = batch_size

    def ended(self, served: Served) -> None:
        served.ended_at = self._clock.now()

    @contextmanager
    def batch(self, served: Sequence[Served]) -> Iterator[None]:
        """Around one model call for `served` (in the batch's task): the batch's span, and
        each request's start and end."""
        for each in served:
            self.started(each, len(served))
        try:
            if self._tracer is None or not any(each.span.is_recording() for each in served):
                yield  # a batch span is recorded only when one of its requests is
            else:
                contexts = [each.span.get_span_context() for each in served]
                name = f"batch {self._model}"
                with batch_span(self._tracer, name, contexts, attributes={MODEL: self._model}):
                    yield
        finally:
            for each in served:
                self.ended(each)

    def finished(self, served: Served) -> None:
        """In the request's task once it was answered, failed or given up: its queue wait and
        inference as children of its call span, and the batch size and queue wait on it."""
        span, tracer = served.span, self._tracer
        if tracer is None or not span.is_recording():
            return
        now = self._clock.now()
        started = served.started_at if served.started_at is not None else now
        set_attributes(
            span, batch_size=served.batch_size, queue_wait_seconds=started - served.queued_at
        )
        # the clock's `now` on the wall clock, where the trace backend places spans
        wall = time.time_ns()
        parent = trace.set_span_in_context(span)
        attributes = {MODEL: self._model}

        def child(name: str, start: float, end: float) -> None:
            at = wall - _ns(now - start)
            made = tracer.start_span(name, parent, start_time=at, attributes=attributes)
            made.end(end_time=wall - _ns(now - end))

        child("queue wait", served.queued_at, started)
        if served.started_at is not None:  # it reached the model
            ended = served.ended_at if served.ended_at is not None else now
            child("inference", served.started_at, ended)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
