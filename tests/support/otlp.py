"""A real OTLP trace receiver standing in for Jaeger: opentelemetry-proto's TraceService on
a threaded gRPC server on 127.0.0.1, collecting every span it is sent.

It must be the synchronous grpc.server: an exporter exports from its own thread, but a
service's `shutdown()` flush blocks its caller, and a receiver on the caller's event loop
would then never answer it.

    with OtlpReceiver() as receiver:
        settings = TelemetrySettings(otlp_endpoint=receiver.endpoint)
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver got it; ids in hex, as Jaeger shows them."""

    service: str
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", ...
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each linked span
    status: str  # "UNSET", "OK", "ERROR"
    status_message: str


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        # the generated grpc module has no annotations
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        port = self._server.add_insecure_port("127.0.0.1:0")
        #: What an exporter is configured with (http://: plaintext).
        self.endpoint = f"http://127.0.0.1:{port}"

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = [
            _received(_service_of(resource_spans.resource.attributes), span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._changed:
            self._spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """The spans, once `condition` holds for them; AssertionError after `timeout` (for
        processes that export on their own schedule; after a `shutdown()` flush in this
        process, `spans()` is already complete)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self._spans):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"spans never met the condition; got {self._spans}")
                self._changed.wait(remaining)
            return list(self._spans)


def _received(service: str, span: Span) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        name=span.name,
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        attributes={a.key: _value(a.value) for a in span.attributes},
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
    )


def _service_of(attributes: Any) -> str:
    for attribute in attributes:
        if attribute.key == "service.name":
            return str(_value(attribute.value))
    return ""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, kind)
