"""The gateway's HTTP metrics middleware in front of a small FastAPI app with the gateway's
own pieces (the API-key middleware, the server-sent-events response), called in process
over httpx's ASGI transport, with a clock the endpoints move: requests counted by route
template, method and status; latencies and the first chunk of a stream timed exactly."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest

from gateway.api_keys import ApiKeys, RequireApiKey
from gateway.app import EventStream
from gateway.metrics import HttpMetrics
from tests.support.clock import FakeClock

KEY = "sk-metrics-test"


def make_app(clock: FakeClock) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequireApiKey, keys=ApiKeys([KEY]))

    @app.get("/v1/models/{model:path}")
    async def retrieve(model: str) -> Response:
        await clock.advance(0.5)
        return Response("{}", media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        async def events() -> AsyncGenerator[bytes, None]:
            await clock.advance(0.25)  # the model's first token
            yield b"data: {}\n\n"
            await clock.advance(1.0)
            yield b"data: [DONE]\n\n"

        return EventStream(events())

    @app.get("/health")
    async def health() -> Response:
        return Response("{}", media_type="application/json")

    @app.get("/broken")
    async def broken() -> Response:
        raise RuntimeError("a bug")

    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def http(clock: FakeClock, registry: CollectorRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(clock)
    counted = HttpMetrics(app, registry, routes=app.routes, clock=clock)
    # the app's errors are answered as the server answers them (500), not raised here
    transport = httpx.ASGITransport(app=counted, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as client:
        yield client


def requests(registry: CollectorRegistry, route: str, method: str, code: str) -> float | None:
    labels = {"route": route, "method": method, "code": code}
    return registry.get_sample_value("modelyard_gateway_requests_total", labels)


async def test_a_request_is_counted_and_timed_under_its_route_template_not_its_path(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    answer = await http.get("/v1/models/team-secret/model-7")
    assert answer.status_code == 200
    assert requests(registry, "/v1/models/{model}", "GET", "200") == 1
    labels = {"route": "/v1/models/{model}", "method": "GET", "code": "200"}
    assert registry.get_sample_value("modelyard_gateway_request_seconds_sum", labels) == 0.5
    assert b"team-secret" not in generate_latest(registry)


async def test_a_streamed_answer_times_its_first_chunk_and_its_end(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    answer = await http.post("/v1/chat/completions")
    assert answer.text == "data: {}\n\ndata: [DONE]\n\n"
    route = {"route": "/v1/chat/completions"}
    assert registry.get_sample_value("modelyard_gateway_first_chunk_seconds_count", route) == 1
    assert registry.get_sample_value("modelyard_gateway_first_chunk_seconds_sum", route) == 0.25
    labels = {**route, "method": "POST", "code": "200"}
    assert registry.get_sample_value("modelyard_gateway_request_seconds_sum", labels) == 1.25


async def test_an_answer_in_one_piece_has_no_first_chunk_time(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    await http.get("/v1/models/chat")
    assert "modelyard_gateway_first_chunk_seconds_count{" not in generate_latest(registry).decode()


async def test_a_refused_key_is_counted_401_under_the_route_it_asked_for(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    answer = await http.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-no"})
    assert answer.status_code == 401
    assert requests(registry, "/v1/chat/completions", "POST", "401") == 1


async def test_an_unknown_path_and_method_are_one_label_each(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    assert (await http.get("/v1/anything/a-user-wrote")).status_code == 404
    assert (await http.request("BREW", "/v1/coffee")).status_code == 404
    assert requests(registry, "<unmatched>", "GET", "404") == 1
    assert requests(registry, "<unmatched>", "_OTHER", "404") == 1
    exposition = generate_latest(registry)
    assert b"a-user-wrote" not in exposition and b"coffee" not in exposition


async def test_a_wrong_method_is_counted_405_under_the_route(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    assert (await http.get("/v1/chat/completions")).status_code == 405
    assert requests(registry, "/v1/chat/completions", "GET", "405") == 1


async def test_an_error_that_escapes_the_app_is_counted_500(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    assert (await http.get("/broken")).status_code == 500
    assert requests(registry, "/broken", "GET", "500") == 1


async def test_health_probes_are_counted_too(
    http: httpx.AsyncClient, registry: CollectorRegistry
) -> None:
    await http.get("/health", headers={"Authorization": ""})
    await http.get("/health")
    assert requests(registry, "/health", "GET", "200") == 2
