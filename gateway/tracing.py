"""A server span for each HTTP request, by OpenTelemetry's ASGI middleware, on the service's
own tracer provider (`modelyard_server.telemetry.tracing`: not the process-global one).

    POST /v1/chat/completions  (SERVER; http.method, http.route, http.status_code)
      └ /modelyard.v1.Predict/PredictStream (CLIENT) → the worker's spans
      └ /modelyard.v1.Composer/RunStream (CLIENT) → the composer's run, nodes, workers

A request that arrives with a W3C `traceparent` continues the client's trace; the gRPC
calls made while it is served (the routed client's, the composer client's) carry its
context on, so an OpenAI request is one trace from the client to the workers.

What the spans keep: the method, the route template (`gateway.request_labels`: never the
raw path) and the status; nothing of a request's URL, headers or body (`span_allowlist`).
/health is not traced (orchestrators probe it every few seconds). Nor are the ASGI
`receive` and `send` steps, which the middleware would otherwise make a span each: one per
streamed chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.asgi import version as asgi_version
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_labels import UNMATCHED, method_label, route_template
from gateway.span_allowlist import AllowListTracer
from modelyard_server.telemetry.spans import TRACE_RESPONSE, trace_response

UNTRACED_PATHS = ("/health",)
#: The span attributes kept, in the old and the new HTTP conventions (OTEL_SEMCONV_
#: STABILITY_OPT_IN chooses): method, route, status, and the error type of a 5xx.
HTTP_ROUTE = "http.route"
KEPT_ATTRIBUTES = frozenset(
    {"http.method", "http.request.method", HTTP_ROUTE, "http.status_code",
     "http.response.status_code", "error.type"}
)  # fmt: skip
_INSTRUMENTATION = "opentelemetry.instrumentation.asgi"
_TRACE_HEADER = TRACE_RESPONSE.encode()


def traced(app: ASGIApp, provider: TracerProvider, *, routes: Sequence[BaseRoute]) -> ASGIApp:
    """`app` (whose routes are `routes`) with a server span per HTTP request."""
    tracer = AllowListTracer(
        provider.get_tracer(_INSTRUMENTATION, asgi_version.__version__), KEPT_ATTRIBUTES
    )
    untraced = "|".join(re.escape(path) for path in UNTRACED_PATHS)
    return OpenTelemetryMiddleware(
        _NamedByRoute(app, routes),
        # matched against scheme://host/path (no query): exactly these paths
        excluded_urls=rf"^[a-z]+://[^/]+(?:{untraced})$",
        default_span_details=_named_by_method,
        tracer=tracer,
        # the gateway's metrics are Prometheus' (`gateway.metrics`); none of OpenTelemetry's
        meter_provider=NoOpMeterProvider(),
        exclude_spans=["receive", "send"],
    )


def _named_by_method(scope: Scope) -> tuple[str, dict[str, str]]:
    """The span's name until its route is known: the method, as OpenTelemetry names an
    HTTP server span without a route (the middleware's default would take the raw path)."""
    return method_label(scope), {}


class _NamedByRoute:
    """Inside the middleware: once the response begins (the router has chosen a route by
    then), names the request's span `<method> <route template>` and sets http.route (a
    request that matched no route keeps the method alone), and tells the client its trace:
    a `traceresponse` header (W3C Trace Context Level 2), as the composer's initial metadata
    does, when the request is sampled."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()

        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start" and span.is_recording():
                route = route_template(scope, self._routes)
                if route != UNMATCHED:
                    span.update_name(f"{method_label(scope)} {route}")
                    span.set_attribute(HTTP_ROUTE, route)
                if (value := trace_response()) is not None:  # this request's span
                    headers = [*message.get("headers", ()), (_TRACE_HEADER, value.encode())]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, naming)
