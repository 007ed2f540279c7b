"""Tracing of one service process: set up from its settings, handed to what makes spans.

    tracing = setup_tracing(settings.telemetry, default_service_name="modelyard-worker")
    server = grpc.aio.server(interceptors=[*tracing.server_interceptors(), metrics, errors])
    channel = grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors())
    ...
    await asyncio.to_thread(tracing.shutdown)   # last, after the server stopped

On, it is a TracerProvider of its own (not the process-global one, so several services in
one test process keep theirs apart) that batches finished spans to an OTLP gRPC receiver
on a background thread. Off (no endpoint anywhere), there is no provider, no interceptor
and no exporter thread; `tracer` is a no-op that only passes an incoming context on.
"""

from __future__ import annotations

import logging
import os

import grpc.aio
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from modelyard_server.telemetry import grpc_tracing
from modelyard_server.telemetry.sampling import sampler
from modelyard_server.telemetry.settings import TelemetrySettings, TracingConfig, tracing_config

log = logging.getLogger(__name__)

#: The instrumentation scope of the spans modelyard makes itself.
TRACER_NAME = "modelyard"


class Tracing:
    """One process's tracing: its tracer, the gRPC interceptors, and the flush at exit."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self._closed = False
        if provider is None:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            self._server: list[grpc.aio.ServerInterceptor] = []
            self._client: list[grpc.aio.ClientInterceptor] = []
        else:
            self.tracer = provider.get_tracer(TRACER_NAME)
            self._server = [grpc_tracing.server_interceptor(provider)]
            self._client = grpc_tracing.client_interceptors(provider)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @property
    def provider(self) -> TracerProvider | None:
        """The service's own provider (None when off), for instrumentation that takes one
        (the gateway's ASGI middleware): not set globally, as the module docstring says."""
        return self._provider

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """First in a server's interceptor list (empty when off)."""
        return list(self._server)

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """For every channel the process opens (empty when off)."""
        return list(self._client)

    def shutdown(self) -> None:
        """Exports the spans still queued, then stops the exporter; spans that end later
        are dropped. Blocks up to the exporter's timeout: from async code, run it in a
        thread. Safe to call twice."""
        if self._provider is None or self._closed:
            return
        self._closed = True
        self._provider.shutdown()


def setup_tracing(settings: TelemetrySettings, *, default_service_name: str) -> Tracing:
    """Tracing as `settings` and the OTEL_* variables say (`telemetry.settings`)."""
    config = tracing_config(settings, default_service_name=default_service_name, environ=os.environ)
    if config is None:
        return Tracing(None)
    log.info(
        "tracing to %s as %s (sampler ratio %s%s)",
        config.endpoint,
        config.service_name,
        config.sampler_ratio,
        ", parent-based" if config.parent_based else "",
    )
    return Tracing(_provider(config))


def _provider(config: TracingConfig) -> TracerProvider:
    # The exporter costs about 90 ms of imports (the OTLP protos): paid only when tracing
    # is on, not by every command that builds settings.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        # Resource.create merges OTEL_RESOURCE_ATTRIBUTES; the name given here wins
        resource=Resource.create({SERVICE_NAME: config.service_name}),
        sampler=sampler(config.sampler_ratio, parent_based=config.parent_based),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    return provider
