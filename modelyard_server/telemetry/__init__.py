"""OpenTelemetry tracing for the services, one concern per module:

    settings       TelemetrySettings (nested in each service's settings) and the OTEL_* fallbacks
    tracing        setup_tracing(...) -> Tracing: the tracer, gRPC interceptors, shutdown()
    grpc_tracing   opentelemetry-instrumentation-grpc's interceptors, three upstream bugs fixed
    sampling       ratio, parent-based; batch spans follow the requests they link to
    spans          start_span, batch_span, set_attributes, current_trace_id
    exemplars      latency histograms with the trace id as exemplar

Logs carrying the trace and span ids: `modelyard_server.logging_setup`; the /metrics
endpoint: `modelyard_server.metrics_http`.
"""
