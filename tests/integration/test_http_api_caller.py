"""Registered APIs behind one model name, called through the routed client: real local
HTTP servers (one correct, one slow, one erroring, one answering the wrong shape), a real
gRPC control plane serving their endpoint set, the real HTTP caller. Cooldowns run on a
FakeClock; the routed client ejects nothing itself (eject_s=0), so what the tests see of
a bad registration is the caller's passive health alone."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelyard.errors import InvalidArgument, Unavailable
from modelyard.routed_client import RoutedClient
from modelyard.v1 import controlplane_pb2 as cp
from modelyard_server.http_api.caller import HttpApiCaller
from modelyard_server.http_api.settings import HttpApiSettings
from tests.support.clock import FakeClock
from tests.support.http_apis import FakeApi

Context = grpc.aio.ServicerContext[Any, Any]
BODY = '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}, "model": {MODEL_NAME}}'
PATH = "data.items[].attributes.answer"
SETTINGS = HttpApiSettings(allowed_networks=["127.0.0.1/32"], allowed_fails=3, cooldown_s=30)


def registration(registration_id: str, url: str, **api: Any) -> cp.Endpoint:
    timeout = Duration()
    timeout.FromMilliseconds(int(api.pop("timeout_s", 10) * 1000))
    return cp.Endpoint(
        worker_id=registration_id,
        address="127.0.0.1:0",
        http_api=cp.HttpApi(
            url_template=url,
            body_template=api.pop("body_template", BODY),
            response_path=PATH,
            timeout=timeout,
            headers=api.pop("headers", {}),
        ),
    )


def watch_endpoints(endpoints: dict[str, list[cp.Endpoint]]) -> grpc.GenericRpcHandler:
    """A control plane's WatchEndpoints, and nothing else, serving the registrations a test
    gives (the sets never change)."""

    async def watch(
        request: cp.WatchEndpointsRequest, context: Context
    ) -> AsyncIterator[cp.WatchEndpointsResponse]:
        yield cp.WatchEndpointsResponse(
            model=request.model, version=1, endpoints=endpoints.get(request.model, [])
        )
        await asyncio.Event().wait()  # hold the stream open, as a control plane does

    handler = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=cp.WatchEndpointsRequest.FromString,
        response_serializer=cp.WatchEndpointsResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(
        "modelyard.v1.ControlPlane", {"WatchEndpoints": handler}
    )


@contextlib.asynccontextmanager
async def routed(
    endpoints: dict[str, list[cp.Endpoint]], caller: HttpApiCaller, **options: Any
) -> AsyncIterator[RoutedClient]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((watch_endpoints(endpoints),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = RoutedClient(
        [f"127.0.0.1:{port}"],
        outside_apis=caller,
        eject_s=0,
        rng=random.Random(7),
        idle_timeout_s=None,
        **options,
    )
    try:
        yield client
    finally:
        await client.close()
        await caller.aclose()
        await server.stop(None)


@pytest.fixture
def apis() -> Iterator[dict[str, FakeApi]]:
    with (
        FakeApi("good") as good,
        FakeApi("slow") as slow,
        FakeApi("error") as error,
        FakeApi("wrong") as wrong,
    ):
        yield {"good": good, "slow": slow, "error": error, "wrong": wrong}


def four(apis: dict[str, FakeApi], slow_timeout_s: float = 0.3) -> list[cp.Endpoint]:
    return [
        registration("api-good", apis["good"].url("/good")),
        registration("api-slow", apis["slow"].url("/slow"), timeout_s=slow_timeout_s),
        registration("api-error", apis["error"].url("/error")),
        registration("api-wrong", apis["wrong"].url("/wrong")),
    ]


async def test_calls_succeed_on_the_good_registration_and_the_bad_ones_cool_down(
    apis: dict[str, FakeApi],
) -> None:
    clock = FakeClock()
    caller = HttpApiCaller(SETTINGS, clock=clock)
    async with routed({"answers": four(apis)}, caller, max_attempts=4) as client:
        for i in range(12):
            result = await client.predict("answers", prompt=f"q{i}")
            assert result.outputs == {"text": f"good: q{i}"}
            assert result.worker == "api-good"
        assert len(apis["good"].requests) == 12
        for bad in ("slow", "error", "wrong"):
            assert len(apis[bad].requests) == 3, bad  # allowed_fails, then no more calls
            assert caller.cooldowns.cooling(f"api-{bad}")

        await clock.advance(30)  # the cooldown passes: each bad one is tried once more
        for i in range(6):
            assert (await client.predict("answers", prompt=f"r{i}")).worker == "api-good"
        for bad in ("slow", "error", "wrong"):
            assert len(apis[bad].requests) == 4, bad
            assert caller.cooldowns.cooling(f"api-{bad}")  # failed its trial: cooled again


async def test_a_registration_that_recovers_is_balanced_again(apis: dict[str, FakeApi]) -> None:
    clock = FakeClock()
    caller = HttpApiCaller(SETTINGS, clock=clock)
    flaky = apis["error"]
    flaky.failing = True
    endpoints = [
        registration("api-good", apis["good"].url("/good")),
        registration("api-flaky", flaky.url("/flaky")),
    ]
    async with routed({"answers": endpoints}, caller) as client:
        while not caller.cooldowns.cooling("api-flaky"):
            assert (await client.predict("answers", prompt="x")).worker == "api-good"
        flaky.failing = False
        await client.predict("answers", prompt="x")
        assert len(flaky.requests) == 3  # still cooling: not called
        await clock.advance(30)
        served = [(await client.predict("answers", prompt="y")).worker for _ in range(20)]
        assert not caller.cooldowns.cooling("api-flaky")
        assert set(served) == {"api-good", "api-flaky"}


async def test_a_stream_is_one_final_result(apis: dict[str, FakeApi]) -> None:
    caller = HttpApiCaller(SETTINGS)
    endpoints = [registration("api-good", apis["good"].url("/good"))]
    async with routed({"answers": endpoints}, caller) as client:
        events = [e async for e in client.predict_stream("answers", text="streamed")]
    assert [(e.final, e.outputs, e.worker) for e in events] == [
        (True, {"text": "good: streamed"}, "api-good")
    ]


async def test_the_request_fills_the_templates_and_the_headers_come_from_the_environment(
    apis: dict[str, FakeApi],
) -> None:
    caller = HttpApiCaller(SETTINGS, environ={"ANSWERS_KEY": "sk-test"})
    url = apis["good"].url("/good?model={MODEL_NAME}")
    headers = {"Authorization": "Bearer ${ANSWERS_KEY}"}
    endpoints = [registration("api-good", url, headers=headers)]
    async with routed({"answers": endpoints}, caller) as client:
        await client.predict("answers", {"prompt": "hi"}, parameters={"temperature": 0.2})
        await client.predict("answers", {"question": "only string"})
    first, second = apis["good"].requests
    assert first.path == "/good?model=answers"
    assert first.body == {"prompt": "hi", "temperature": 0.2, "model": "answers"}
    assert first.headers["authorization"] == "Bearer sk-test"
    assert second.body["prompt"] == "only string"
    assert second.body["temperature"] == SETTINGS.default_temperature


async def test_a_missing_secret_fails_the_call_naming_the_variable(
    apis: dict[str, FakeApi],
) -> None:
    caller = HttpApiCaller(SETTINGS, environ={})
    headers = {"X-Api-Key": "${ANSWERS_KEY}"}
    endpoints = [registration("api-good", apis["good"].url("/good"), headers=headers)]
    async with routed({"answers": endpoints}, caller) as client:
        with pytest.raises(Unavailable, match="ANSWERS_KEY") as caught:
            await client.predict("answers", prompt="hi")
    assert "registration api-good (127.0.0.1:" in caught.value.message
    assert apis["good"].requests == []


async def test_a_lone_registration_that_fails_says_the_api_failed_not_that_none_is_left(
    apis: dict[str, FakeApi],
) -> None:
    caller = HttpApiCaller(SETTINGS)
    endpoints = [registration("api-error", apis["error"].url("/error"))]
    async with routed({"answers": endpoints}, caller) as client:
        with pytest.raises(Unavailable) as caught:
            await client.predict("answers", prompt="hi")
    # the gateway maps API_FAILED to 502; NO_REPLICA would be a 503
    assert caught.value.reason == "API_FAILED"
    assert "api-error" in caught.value.message


async def test_a_call_without_a_prompt_is_refused_and_not_retried(
    apis: dict[str, FakeApi],
) -> None:
    caller = HttpApiCaller(SETTINGS)
    endpoints = [
        registration("api-a", apis["good"].url("/good")),
        registration("api-b", apis["wrong"].url("/good")),
    ]
    async with routed({"answers": endpoints}, caller) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.predict("answers", {"count": 3})
    assert caught.value.field == "inputs.prompt"
    assert apis["good"].requests == apis["wrong"].requests == []
    assert not caller.cooldowns.cooling("api-a")


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://10.20.30.40:8080/v1", "a private address"),
    ],
)
async def test_the_ssrf_guard_refuses_the_call_and_it_goes_to_another_registration(
    apis: dict[str, FakeApi], url: str, refusal: str
) -> None:
    caller = HttpApiCaller(SETTINGS)
    async with routed({"answers": [registration("api-bad", url)]}, caller) as client:
        with pytest.raises(Unavailable, match=refusal):
            await client.predict("answers", prompt="hi")
    caller = HttpApiCaller(SETTINGS)
    endpoints = [registration("api-bad", url), registration("api-good", apis["good"].url("/"))]
    async with routed({"answers": endpoints}, caller) as client:
        for _ in range(4):
            assert (await client.predict("answers", prompt="hi")).worker == "api-good"


async def test_with_a_tracer_each_call_is_a_client_span(apis: dict[str, FakeApi]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = HttpApiCaller(SETTINGS, tracer=provider.get_tracer("test"))
    sets = {
        "answers": [registration("api-good", apis["good"].url("/good"))],
        "broken": [registration("api-error", apis["error"].url("/error"))],
    }
    async with routed(sets, caller) as client:
        await client.predict("answers", prompt="hi")
        with pytest.raises(Unavailable):
            await client.predict("broken", prompt="hi")
    good, bad = exporter.get_finished_spans()
    assert (good.name, good.kind) == ("POST", SpanKind.CLIENT)
    assert dict(good.attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": apis["good"].port,
        "modelyard.model": "answers",
        "modelyard.replica": "api-good",
    }
    assert good.status.status_code == StatusCode.UNSET
    assert bad.status.status_code == StatusCode.ERROR
    assert "HTTP 500" in (bad.status.description or "")
