"""The gateway's requests counted and timed, for its /metrics (`gateway.settings.metrics_port`):

    modelyard_gateway_requests_total{route, method, code}    requests that ended, by HTTP status
    modelyard_gateway_request_seconds{route, method, code}   from arrival to the response's end
    modelyard_gateway_first_chunk_seconds{route}             streamed answers (server-sent
                                                             events): arrival to first chunk

`route` is the template the request matched (`/v1/models/{model}`, `<unmatched>` for a
404: `gateway.request_labels`). For a streamed chat or completion from a model that
streams, the first chunk carries its first token: the time to first token as the client
sees it, less the network. A request whose client left is counted with the status it was
answered (a stream: the 200 it began with; a unary call cut short: 499); one that failed
before any answer with 500, as the server answers it.

Plain ASGI, not Starlette's BaseHTTPMiddleware: that one runs the app in a task of its own
and relays the response through a memory stream, which costs every request (and every
chunk of a stream) steps on the event loop. This one wraps `send` and reads the clock
twice (thrice when streaming).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_labels import method_label, route_template
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.telemetry.exemplars import observe, seconds_histogram

NAMESPACE = "modelyard_gateway"
#: Prometheus' default buckets and a whole answer's longer times (the default request
#: timeout is 60 s).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_EVENT_STREAM = b"text/event-stream"


class HttpMetrics:
    """ASGI middleware: counts and times the HTTP requests to `app`, whose routes are
    `routes`, on `registry`. With `exemplars`, each latency carries the trace id of the
    request's span (only with tracing on: otherwise there is none to look for)."""

    def __init__(
        self,
        app: ASGIApp,
        registry: CollectorRegistry,
        *,
        routes: Sequence[BaseRoute],
        exemplars: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.app = app
        self._routes = routes
        self._exemplars = exemplars
        self._clock = clock
        labels = ["route", "method", "code"]
        self._requests = Counter(
            f"{NAMESPACE}_requests",
            "HTTP requests by route template, method and status code.",
            labels,
            registry=registry,
        )
        self._seconds = seconds_histogram(
            f"{NAMESPACE}_request_seconds",
            "Time from a request's arrival to the end of its response.",
            labels,
            registry,
            buckets=SECONDS_BUCKETS,
        )
        self._first_chunk = seconds_histogram(
            f"{NAMESPACE}_first_chunk_seconds",
            "Streamed responses: time from the request's arrival to its first chunk sent.",
            ["route"],
            registry,
            buckets=SECONDS_BUCKETS,
        )
        # each label set's series, looked up once (the client's `labels()` validates and
        # locks on every call: a third of this middleware's cost); bounded as the labels are
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._first_chunk_series: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self._clock.now()
        status = 500  # unless an answer began: what the server answers an escaped error with
        streaming = False  # server-sent events whose first chunk is still to come

        async def counted(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                streaming = _is_event_stream(message.get("headers", ()))
            elif streaming and message["type"] == "http.response.body":
                streaming = False
                await send(message)  # the chunk is on its way: then it counts as sent
                self._observe(self._first_chunk_of(scope), started)
                return
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            requests, seconds = self._series_of(scope, status)
            requests.inc()
            self._observe(seconds, started)

    def _series_of(self, scope: Scope, status: int) -> tuple[Counter, Histogram]:
        key = (route_template(scope, self._routes), method_label(scope), status)
        series = self._series.get(key)
        if series is None:
            labels = (key[0], key[1], str(status))
            series = self._series[key] = (
                self._requests.labels(*labels),
                self._seconds.labels(*labels),
            )
        return series

    def _first_chunk_of(self, scope: Scope) -> Histogram:
        route = route_template(scope, self._routes)
        series = self._first_chunk_series.get(route)
        if series is None:
            series = self._first_chunk_series[route] = self._first_chunk.labels(route)
        return series

    def _observe(self, histogram: Histogram, started: float) -> None:
        elapsed = self._clock.now() - started
        if self._exemplars:
            observe(histogram, elapsed)
        else:
            histogram.observe(elapsed)


def _is_event_stream(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(
        name == b"content-type" and value.startswith(_EVENT_STREAM) for name, value in headers
    )
