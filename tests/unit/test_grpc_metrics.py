"""The metrics interceptor on a real grpc.aio server (127.0.0.1, port 0) with trivial
handlers: calls counted and timed by method, model and the status code the client saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry

from modelyard.errors import NotFound, ResourceExhausted
from modelyard.v1 import predict_pb2 as pb
from modelyard_server.grpc_errors import ErrorMappingInterceptor
from modelyard_server.grpc_metrics import MetricsInterceptor
from tests.helpers import eventually
from tests.support.clock import FakeClock

UNARY = "/modelyard.test.Svc/Unary"
STREAM = "/modelyard.test.Svc/Stream"
NO_MODEL = "/modelyard.test.Svc/NoModel"
OUTSIDE = "/other.Svc/Unary"  # not under the interceptor's prefix

Context = grpc.aio.ServicerContext[Any, Any]


class Handlers(grpc.GenericRpcHandler):
    """What each call does depends on the model it names (a trivial script per test)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waiting = asyncio.Event()  # set once a "wait" call is in its handler
        self.release = asyncio.Event()  # holds the "wait" model's call until set

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        codec: dict[str, Any] = {
            "request_deserializer": pb.PredictRequest.FromString,
            "response_serializer": pb.PredictResponse.SerializeToString,
        }
        if details.method in (UNARY, OUTSIDE):
            return grpc.unary_unary_rpc_method_handler(self.unary, **codec)
        if details.method == STREAM:
            return grpc.unary_stream_rpc_method_handler(self.stream, **codec)
        if details.method == NO_MODEL:
            return grpc.unary_unary_rpc_method_handler(
                self.unary,
                request_deserializer=pb.ListModelsRequest.FromString,
                response_serializer=pb.PredictResponse.SerializeToString,
            )
        return None

    async def unary(self, request: Any, context: Context) -> pb.PredictResponse:
        model = getattr(request, "model", "")
        if model == "slow":
            await self.clock.advance(0.25)  # the call takes a quarter of a second
        elif model == "wait":
            self.waiting.set()
            await self.release.wait()
        elif model == "bug":
            raise RuntimeError("a bug")
        elif model not in ("", "echo"):
            raise NotFound(f"model {model!r} is not served here")
        return pb.PredictResponse(model=model)

    async def stream(self, request: pb.PredictRequest, context: Context) -> AsyncIterator[Any]:
        yield pb.PredictResponse(model=request.model)
        if request.model == "full":
            raise ResourceExhausted("queue full")
        yield pb.PredictResponse(model=request.model)


@pytest.fixture
async def served() -> AsyncIterator[tuple[CollectorRegistry, Handlers, grpc.aio.Channel]]:
    clock = FakeClock()
    registry = CollectorRegistry()
    counting = MetricsInterceptor(
        registry, namespace="test", models={"echo", "slow", "wait", "bug", "full"}, clock=clock
    )
    server = grpc.aio.server(interceptors=[counting, ErrorMappingInterceptor()])
    handlers = Handlers(clock)
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield registry, handlers, channel
    finally:
        await server.stop(None)


def unary(channel: grpc.aio.Channel, method: str = UNARY) -> Callable[..., Any]:
    return channel.unary_unary(
        method,
        request_serializer=pb.PredictRequest.SerializeToString,
        response_deserializer=pb.PredictResponse.FromString,
    )


def count(registry: CollectorRegistry, method: str, model: str, code: str) -> float | None:
    labels = {"method": method, "model": model, "code": code}
    return registry.get_sample_value("test_requests_total", labels)


async def counts_become(
    registry: CollectorRegistry, expected: dict[tuple[str, str, str], float]
) -> None:
    """The server counts a call after the client has its answer: wait for it to land."""
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: counted(registry) == expected)
    assert counted(registry) == expected


def counted(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """Every (method, model, code) counted so far."""
    return {
        (s.labels["method"], s.labels["model"], s.labels["code"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "test_requests_total"
    }


async def test_a_call_is_counted_and_timed_by_method_model_and_code(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, _, channel = served
    await unary(channel)(pb.PredictRequest(model="slow"))
    await unary(channel)(pb.PredictRequest(model="echo"))
    await counts_become(registry, {(UNARY, "slow", "OK"): 1, (UNARY, "echo", "OK"): 1})
    labels = {"method": UNARY, "model": "slow", "code": "OK"}
    assert registry.get_sample_value("test_request_seconds_count", labels) == 1
    assert registry.get_sample_value("test_request_seconds_sum", labels) == 0.25
    bucket = {**labels, "le": "0.25"}
    assert registry.get_sample_value("test_request_seconds_bucket", bucket) == 1


async def test_errors_count_with_the_status_the_client_saw_and_unknown_names_share_a_label(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, _, channel = served
    seen = []
    for model in ("typo", "other-typo", "bug"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await unary(channel)(pb.PredictRequest(model=model))
        seen.append(raised.value.code())
    assert seen == [grpc.StatusCode.NOT_FOUND] * 2 + [grpc.StatusCode.INTERNAL]
    await counts_become(
        registry,
        {
            (UNARY, "<unknown>", "NOT_FOUND"): 2,
            (UNARY, "bug", "INTERNAL"): 1,
        },
    )


async def test_streams_are_counted_once_when_they_end(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, _, channel = served
    stream = channel.unary_stream(
        STREAM,
        request_serializer=pb.PredictRequest.SerializeToString,
        response_deserializer=pb.PredictResponse.FromString,
    )
    assert [r.model async for r in stream(pb.PredictRequest(model="echo"))] == ["echo", "echo"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [r async for r in stream(pb.PredictRequest(model="full"))]
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await counts_become(
        registry,
        {
            (STREAM, "echo", "OK"): 1,
            (STREAM, "full", "RESOURCE_EXHAUSTED"): 1,
        },
    )


async def test_a_call_the_client_cancels_counts_as_cancelled(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, handlers, channel = served
    call = unary(channel)(pb.PredictRequest(model="wait"))
    async with asyncio.timeout(5):
        await handlers.waiting.wait()
    call.cancel()
    await eventually(lambda: count(registry, UNARY, "wait", "CANCELLED") == 1)
    handlers.release.set()
    await counts_become(registry, {(UNARY, "wait", "CANCELLED"): 1})


async def test_requests_without_a_model_field_count_with_an_empty_model(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, _, channel = served
    no_model = channel.unary_unary(
        NO_MODEL,
        request_serializer=pb.ListModelsRequest.SerializeToString,
        response_deserializer=pb.PredictResponse.FromString,
    )
    await no_model(pb.ListModelsRequest())
    await counts_become(registry, {(NO_MODEL, "", "OK"): 1})


async def test_services_outside_the_prefix_are_not_counted(
    served: tuple[CollectorRegistry, Handlers, grpc.aio.Channel],
) -> None:
    registry, _, channel = served
    await unary(channel, OUTSIDE)(pb.PredictRequest(model="echo"))
    assert counted(registry) == {}
