"""One service's observability, set up from its settings: tracing, a metrics registry of
its own, the interceptors every modelyard server puts in front of its handlers, and the
/metrics endpoint.

    telemetry = ServiceTelemetry(settings.telemetry, service_name="modelyard-composer",
                                 host=settings.host, metrics_port=settings.metrics_port)
    server = grpc.aio.server(interceptors=telemetry.server_interceptors(
        namespace="modelyard_composer", models=()))
    ...
    telemetry.start_metrics()        # once the service listens
    ...
    await telemetry.close()          # last: /metrics port freed, spans flushed
"""

from __future__ import annotations

import asyncio
from collections.abc import Container

import grpc.aio
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from modelyard_server.grpc_errors import ErrorMappingInterceptor
from modelyard_server.grpc_metrics import MetricsInterceptor
from modelyard_server.metrics_http import MetricsHttpServer
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.telemetry.tracing import Tracing, setup_tracing


class ServiceTelemetry:
    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        service_name: str,
        host: str,
        metrics_port: int,
    ) -> None:
        """`service_name` is the trace backend's name for the service unless the settings
        or OTEL_SERVICE_NAME give another; `metrics_port` -1 serves no /metrics."""
        self.tracing: Tracing = setup_tracing(settings, default_service_name=service_name)
        self.registry = CollectorRegistry()
        self.request_metrics: MetricsInterceptor | None = None  # by `server_interceptors`
        self._metrics_http = (
            MetricsHttpServer(self.registry, host=host, port=metrics_port)
            if metrics_port >= 0
            else None
        )

    @property
    def tracer(self) -> trace.Tracer | None:
        """The tracer for the service's own spans; None when tracing is off, so that code
        can skip its spans altogether (a no-op span still costs microseconds)."""
        return self.tracing.tracer if self.tracing.enabled else None

    @property
    def metrics_port(self) -> int | None:
        """The /metrics port while it serves (the bound one when configured as 0)."""
        return self._metrics_http.port if self._metrics_http is not None else None

    def server_interceptors(
        self, *, namespace: str, models: Container[str]
    ) -> list[grpc.aio.ServerInterceptor]:
        """Tracing first, so a call's span is current in everything after it (the latency
        exemplars, the error mapping's log lines); then the calls' metrics
        (`<namespace>_requests_total`, `<namespace>_request_seconds`; `models` are the
        model names counted by name), which see the statuses the error mapping chose."""
        #: Kept for calls that are not RPCs of their own (PredictMany's messages).
        self.request_metrics = MetricsInterceptor(self.registry, namespace=namespace, models=models)
        return [
            *self.tracing.server_interceptors(),
            self.request_metrics,
            ErrorMappingInterceptor(),
        ]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """For every channel the service opens: the trace goes on to the next hop."""
        return self.tracing.client_interceptors()

    def start_metrics(self) -> None:
        """Serves /metrics, when a port is configured."""
        if self._metrics_http is not None and self._metrics_http.port is None:
            self._metrics_http.start()

    async def close(self) -> None:
        """Frees the /metrics port and flushes the spans still queued (the exporter waits
        on the network, so off the event loop). Spans that end later are dropped: call it
        once the server has stopped."""
        if self._metrics_http is not None:
            await self._metrics_http.stop()
        await asyncio.to_thread(self.tracing.shutdown)
