"""Streams and cancellation against a real worker: the queue limit covers streams, a stream
cancelled while it waits for the model's thread costs nothing, and every cancelled call is
counted in the request metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from modelyard.client import AsyncClient, StreamEvent
from modelyard.errors import DeadlineExceeded, ResourceExhausted
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc
from modelyard.values import to_value_map
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Ticker
from workers.server import Worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUEUE_LIMIT = 2
MODELS: list[dict[str, Any]] = [
    {"name": "ticker", "class": "tests.support.models:Ticker"},
    {
        "name": "ticker-small-queue",
        "class": "tests.support.models:Ticker",
        "batching": {"max_queue_size": QUEUE_LIMIT},
    },
    {
        "name": "slow",
        "class": "tests.support.models:SlowEcho",
        "options": {"delay_ms": 2000},
    },
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker() -> AsyncIterator[Worker]:
    async with running_worker(MODELS) as w:
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(worker: Worker) -> AsyncIterator[predict_pb2_grpc.PredictStub]:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        yield predict_pb2_grpc.PredictStub(channel)


def requests_counted(worker: Worker, model: str, code: str) -> float:
    """Predict and PredictStream calls for `model` that ended with `code`."""
    methods = ("/modelyard.v1.Predict/Predict", "/modelyard.v1.Predict/PredictStream")
    return sum(
        worker.metrics.registry.get_sample_value(
            "modelyard_worker_requests_total", {"method": method, "model": model, "code": code}
        )
        or 0
        for method in methods
    )


StreamCall = grpc.aio.UnaryStreamCall[pb.PredictStreamRequest, pb.PredictStreamResponse]
UnaryCall = grpc.aio.UnaryUnaryCall[pb.PredictRequest, pb.PredictResponse]


def ticks(stub: predict_pb2_grpc.PredictStub, count: int, interval_ms: float) -> StreamCall:
    """A Ticker stream as a raw call, so the test decides when it is cancelled."""
    request = pb.PredictStreamRequest(model="ticker", inputs=to_value_map({"count": count}))
    request.parameters["interval_ms"].float_value = interval_ms
    return cast(StreamCall, stub.PredictStream(request))  # the stubs are typed for sync grpc


async def test_streams_beyond_the_queue_limit_are_refused(worker: Worker) -> None:
    runner = worker.registry.get("ticker-small-queue").runner

    def stream(count: int) -> AsyncIterator[StreamEvent]:
        return client.predict_stream(
            "ticker-small-queue", count=count, parameters={"interval_ms": 10}
        )

    async with AsyncClient(worker.address, timeout=60) as client:
        running = stream(6_000)  # holds the model's thread for a minute, until closed
        await anext(running)
        waiting = asyncio.create_task(collect(stream(4)))  # admitted, waits for the thread
        try:
            await eventually(lambda: runner.queue_depth == QUEUE_LIMIT)
            with pytest.raises(ResourceExhausted) as refused:
                await collect(stream(4))
            assert "waiting or streaming, its queue limit" in refused.value.message
        finally:
            await running.aclose()  # type: ignore[attr-defined]  # it is an async generator
        events = await waiting
    assert events[-1].outputs == {"ticks": 4}  # the admitted one ran once the thread was free
    # the server side ends just after the client saw the final message
    await eventually(lambda: runner.queue_depth == 0)


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_a_stream_cancelled_while_queued_costs_no_model_call_and_ends_at_once(
    worker: Worker, stub: predict_pb2_grpc.PredictStub
) -> None:
    entry = worker.registry.get("ticker")
    assert isinstance(entry.model, Ticker)
    runner, started = entry.runner, entry.model.streams_started
    cancelled = requests_counted(worker, "ticker", "CANCELLED")
    # holds the model's thread for a minute unless cancelled
    running = ticks(stub, 6000, 10)
    queued = None
    try:
        await running.read()  # the first tick: it holds the thread now
        queued = ticks(stub, 1, 10)
        await eventually(lambda: runner.queue_depth == 2)  # admitted, waiting for the thread
        queued.cancel()
        # promptly: not once the running stream is done with the thread, a minute from now
        await eventually(lambda: runner.queue_depth == 1, timeout=30)
    finally:
        running.cancel()
        if queued is not None:
            queued.cancel()
    await eventually(lambda: runner.queue_depth == 0)
    assert entry.model.streams_started == started + 1  # only the stream that ran
    # both ended cancelled, and both are counted so
    await eventually(lambda: requests_counted(worker, "ticker", "CANCELLED") == cancelled + 2)


async def test_cancelled_and_timed_out_calls_are_counted_as_cancelled(
    worker: Worker, stub: predict_pb2_grpc.PredictStub
) -> None:
    def in_flight() -> int:
        return worker.service.load().model_in_flight["slow"]

    before = requests_counted(worker, "slow", "CANCELLED")
    request = pb.PredictRequest(model="slow", inputs=to_value_map({"x": 1}))
    call = cast(UnaryCall, stub.Predict(request))
    await eventually(lambda: in_flight() == 1)
    call.cancel()
    await eventually(lambda: requests_counted(worker, "slow", "CANCELLED") == before + 1)
    async with AsyncClient(worker.address) as client:
        with pytest.raises(DeadlineExceeded):
            await client.predict("slow", x=2, timeout=1.0)  # the model takes 2 s
    await eventually(lambda: requests_counted(worker, "slow", "CANCELLED") == before + 2)
    assert requests_counted(worker, "slow", "OK") == 0
    await eventually(lambda: in_flight() == 0, timeout=10)
