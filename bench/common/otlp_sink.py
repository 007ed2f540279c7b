"""A local OTLP trace receiver that only counts what it is sent, standing in for Jaeger when
a bench measures what tracing costs the services: opentelemetry-proto's TraceService on a
threaded gRPC server on 127.0.0.1, counting spans by the resource attribute `bench.variant`
(each traced stack sets its own through OTEL_RESOURCE_ATTRIBUTES).

    with OtlpSink() as sink:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
               "OTEL_RESOURCE_ATTRIBUTES": "bench.variant=sampled_100"}
        ...
        sink.spans()   # {"sampled_100": 12345}

It runs in the bench's own process, which is idle while a load generator (another process)
measures; its CPU counts as other work on the machine.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

VARIANT = "bench.variant"


class OtlpSink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        # the generated grpc module has no annotations
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        port = self._server.add_insecure_port("127.0.0.1:0")
        #: What the services' OTEL_EXPORTER_OTLP_ENDPOINT says (http://: plaintext).
        self.endpoint = f"http://127.0.0.1:{port}"

    def __enter__(self) -> OtlpSink:
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
        for resource_spans in request.resource_spans:
            variant = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == VARIANT
                ),
                "",
            )
            count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            with self._lock:
                self._counts[variant] = self._counts.get(variant, 0) + count
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> dict[str, int]:
        """Spans received so far, by `bench.variant`."""
        with self._lock:
            return dict(self._counts)
