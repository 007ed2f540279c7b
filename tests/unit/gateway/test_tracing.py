"""The gateway's request spans (OpenTelemetry's ASGI middleware, as `gateway.tracing` sets it
up) on a provider of the test's own, in process over httpx's ASGI transport: one server
span per request, named by route template, continuing the caller's `traceparent`, keeping
method, route and status only (whatever the environment asks to capture), none for
/health, and a stream is one span, not one per chunk."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Response
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import EventStream
from gateway.tracing import traced

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models/{model:path}")
    async def retrieve(model: str) -> Response:
        # what the gateway's gRPC calls would be children of
        assert trace.get_current_span().is_recording()
        return Response("{}", media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        async def events() -> AsyncGenerator[bytes, None]:
            for _ in range(5):
                yield b"data: {}\n\n"
            yield b"data: [DONE]\n\n"

        return EventStream(events())

    @app.get("/health")
    async def health() -> Response:
        return Response("{}", media_type="application/json")

    return app


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def http(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    # an operator asking for every request header: Authorization must not be kept anyway
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app()
    transport = httpx.ASGITransport(app=traced(app, provider, routes=app.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    provider.shutdown()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


async def test_a_request_continues_the_callers_trace_named_by_its_route(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    headers = {"traceparent": TRACEPARENT, "Authorization": "Bearer sk-secret"}
    answer = await http.get(
        "/v1/models/team-secret?user=someone", headers={**headers, "User-Agent": "curl/8"}
    )
    assert answer.status_code == 200
    span = only_span(exporter)
    assert span.name == "GET /v1/models/{model}"
    assert span.kind is trace.SpanKind.SERVER
    assert trace.format_trace_id(span.context.trace_id) == TRACE_ID
    assert span.parent is not None and trace.format_span_id(span.parent.span_id) == PARENT_ID
    assert dict(span.attributes or {}) == {
        "http.method": "GET",
        "http.route": "/v1/models/{model}",
        "http.status_code": 200,
    }


async def test_a_stream_is_one_span_however_many_chunks(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    answer = await http.post("/v1/chat/completions", content=b'{"prompt": "a user prompt"}')
    assert answer.text.count("data:") == 6
    span = only_span(exporter)
    assert span.name == "POST /v1/chat/completions"
    assert "a user prompt" not in str(span.to_json())


async def test_an_unknown_path_is_named_by_its_method_alone(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    assert (await http.get("/v1/what-a-user-typed")).status_code == 404
    span = only_span(exporter)
    assert span.name == "GET"
    assert dict(span.attributes or {}) == {"http.method": "GET", "http.status_code": 404}


async def test_health_probes_are_not_traced(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/v1/models/health")).status_code == 200  # a model named so is
    assert [span.name for span in exporter.get_finished_spans()] == ["GET /v1/models/{model}"]
