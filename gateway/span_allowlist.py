"""A tracer whose spans keep only the attributes on an allow-list, for instrumentation that
records more than a service may keep.

OpenTelemetry's ASGI middleware puts on each request's span the full URL and query, the
client's address and port, its User-Agent and, when OTEL_INSTRUMENTATION_HTTP_CAPTURE_
HEADERS_SERVER_REQUEST says so, any request header (Authorization too: nothing is
redacted unless also configured). The gateway's requests carry users' prompts and keys, and
a trace backend is read by more people than the gateway's logs; so its HTTP spans keep
what it chooses (method, route, status) and drop the rest, whatever the environment says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types


class AllowListTracer(trace.Tracer):
    """Starts `tracer`'s spans with only the `allowed` attributes, and keeps only those
    set on them later."""

    def __init__(self, tracer: trace.Tracer, allowed: frozenset[str]) -> None:
        self._tracer = tracer
        self._allowed = allowed

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        span = self._tracer.start_span(
            name,
            context,
            kind,
            _only(self._allowed, attributes or {}),
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        return AllowListSpan(span, self._allowed)

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Any:  # the API's context-manager type (what `use_span` gives) is private
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        return trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )


class AllowListSpan(Span):
    """`span`, but for the attributes outside `allowed`, which it drops."""

    def __init__(self, span: Span, allowed: frozenset[str]) -> None:
        self._span = span
        self._allowed = allowed

    @property
    def kind(self) -> SpanKind:
        """The SDK span's kind (the instrumentation reads it)."""
        kind = getattr(self._span, "kind", SpanKind.INTERNAL)
        return kind if isinstance(kind, SpanKind) else SpanKind.INTERNAL

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if key in self._allowed:
            self._span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._span.set_attributes(_only(self._allowed, attributes))

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._span.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._span.record_exception(exception, attributes, timestamp, escaped)


def _only(allowed: frozenset[str], attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if key in allowed}
