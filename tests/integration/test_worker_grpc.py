"""A real worker server and real gRPC clients, with weightless models: the service
conventions, batching and isolation, streaming and cancellation, and every bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.client import AsyncClient
from modelyard.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModelyardError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc, value_pb2
from tests.integration.conftest import running_worker
from workers.server import Worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODELS: list[dict[str, Any]] = [
    {"name": "echo", "class": "tests.support.models:Echo"},
    {
        "name": "slow",
        "class": "tests.support.models:SlowEcho",
        "batching": {"max_batch_size": 8, "max_wait_ms": 20},
        "options": {"delay_ms": 30},
    },
    {
        "name": "tiny-queue",
        "class": "tests.support.models:SlowEcho",
        "batching": {"max_batch_size": 1, "max_queue_size": 2},
        "options": {"delay_ms": 150},
    },
    {"name": "ticker", "class": "tests.support.models:Ticker"},
    {
        "name": "picky",
        "class": "tests.support.models:Picky",
        "batching": {"max_batch_size": 4, "max_wait_ms": 20},
    },
    {"name": "broken", "class": "tests.support.models:BrokenLoad"},
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker() -> AsyncIterator[Worker]:
    async with running_worker(MODELS, tags={"zone": "test"}, max_message_bytes=64 * 1024) as w:
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(worker: Worker) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(worker.address, timeout=10) as c:
        yield c


async def test_predict_round_trips_any_values(client: AsyncClient) -> None:
    inputs = {"text": "hi", "n": 3, "flags": [True, None], "v": np.arange(4, dtype=np.int16)}
    result = await client.predict("echo", inputs)
    assert result.model == "echo"
    assert result.outputs["text"] == "hi" and result.outputs["flags"] == [True, None]
    np.testing.assert_array_equal(result.outputs["v"], inputs["v"])


async def test_concurrent_requests_are_batched_and_each_gets_its_own_result(
    client: AsyncClient, worker: Worker
) -> None:
    results = await asyncio.gather(*(client.predict("slow", x=i) for i in range(16)))
    assert [r.outputs["x"] for r in results] == list(range(16))
    sizes = [r.outputs["batch_size"] for r in results]
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert all(size <= 8 for size in sizes)
    observed = worker.metrics.registry.get_sample_value(
        "modelyard_worker_batch_size_count", {"model": "slow"}
    )
    assert observed is not None and observed < 16  # fewer model calls than requests


async def test_a_failing_request_does_not_fail_its_batch_mates(client: AsyncClient) -> None:
    texts = ["a", "boom", "b", ""]
    results = await asyncio.gather(
        *(client.predict("picky", text=t) for t in texts), return_exceptions=True
    )
    assert results[0].outputs == {"text": "A"}  # type: ignore[union-attr]
    assert results[2].outputs == {"text": "B"}  # type: ignore[union-attr]
    assert isinstance(results[1], ModelyardError)
    assert isinstance(results[3], InvalidArgument)
    assert results[1].code == grpc.StatusCode.INTERNAL
    assert "secret" not in results[1].message  # exception text never leaks
    assert "must not be empty" in results[3].message


async def test_a_full_queue_answers_resource_exhausted_and_the_rest_succeed(
    client: AsyncClient,
) -> None:
    results = await asyncio.gather(
        *(client.predict("tiny-queue", x=i) for i in range(6)), return_exceptions=True
    )
    refused: list[ResourceExhausted] = [r for r in results if isinstance(r, ResourceExhausted)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert refused and served and len(refused) + len(served) == 6
    assert "queue limit" in refused[0].message


async def test_stream_sends_chunks_then_the_final_result(client: AsyncClient) -> None:
    events = [e async for e in client.predict_stream("ticker", count=3)]
    assert [e.outputs for e in events[:-1]] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert events[-1].final and events[-1].outputs == {"ticks": 3}


async def test_cancelling_a_stream_stops_the_model(client: AsyncClient) -> None:
    # 1,000 ticks at 10 ms would hold the model's thread for 10 s if it did not stop
    stream = client.predict_stream("ticker", count=1000)
    async for event in stream:
        if event.index == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]  # it is an async generator
    started = time.monotonic()
    result = await client.predict("ticker", count=1, timeout=3)
    assert result.outputs == {"ticks": 1}
    assert time.monotonic() - started < 3


async def test_a_stream_past_its_deadline_stops_the_model(client: AsyncClient) -> None:
    with pytest.raises(DeadlineExceeded):
        async for _ in client.predict_stream("ticker", count=1000, timeout=0.3):
            pass
    result = await client.predict("ticker", count=2, timeout=3)
    assert result.outputs == {"ticks": 2}


@pytest.mark.parametrize(
    ("model", "inputs", "error", "message"),
    [
        ("nope", {"x": 1}, NotFound, "model 'nope' is not served here; this worker serves: echo"),
        ("ticker", {"count": "x"}, InvalidArgument, "input 'count' must be an integer"),
        ("ticker", {}, InvalidArgument, "missing input 'count'"),
        ("broken", {}, Unavailable, "model 'broken' failed to load: FileNotFoundError"),
        ("echo", {"big": "x" * 100_000}, ResourceExhausted, ""),
    ],
)
async def test_bad_requests_get_a_clear_status(
    client: AsyncClient,
    model: str,
    inputs: dict[str, object],
    error: type[ModelyardError],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        await client.predict(model, inputs)
    assert message in caught.value.message


async def test_a_bad_parameter_is_invalid_argument(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument, match="unknown parameter 'speed'"):
        await client.predict("ticker", count=1, parameters={"speed": 2})


async def test_an_unset_value_is_invalid_argument(worker: Worker) -> None:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = predict_pb2_grpc.PredictStub(channel)
        request = pb.PredictRequest(model="echo")
        request.inputs["x"].SetInParent()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Predict(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no kind set" in (caught.value.details() or "")


async def test_list_models_reports_state_and_reason(client: AsyncClient) -> None:
    states = {m.model: m for m in await client.list_models()}
    assert list(states) == [m["name"] for m in MODELS]
    assert states["echo"].state == pb.MODEL_STATE_READY
    assert states["broken"].state == pb.MODEL_STATE_FAILED
    assert "weights.bin not found" in states["broken"].state_reason


async def test_metadata_describes_signature_defaults_batching_and_tags(
    client: AsyncClient,
) -> None:
    meta = await client.metadata("ticker")
    assert meta.task == "ticker" and meta.streaming and meta.device == "cpu"
    assert [(f.name, f.kind, f.required) for f in meta.inputs] == [
        ("count", value_pb2.VALUE_KIND_INT, True)
    ]
    assert meta.default_parameters["interval_ms"].float_value == 10.0
    assert meta.device_tags["device"] == "cpu"
    assert meta.device_tags["zone"] == "test"
    assert int(meta.device_tags["cpu_count"]) >= 1
    slow = await client.metadata("slow")
    assert slow.batching.max_batch_size == 8
    assert slow.batching.max_wait.ToTimedelta() == timedelta(milliseconds=20)
    with pytest.raises(NotFound):
        await client.metadata("nope")


async def test_health_per_model_and_for_the_worker(worker: Worker) -> None:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            return int(reply.status)

        assert await status("") == health_pb2.HealthCheckResponse.SERVING
        assert await status("modelyard.v1.Predict") == health_pb2.HealthCheckResponse.SERVING
        assert await status("echo") == health_pb2.HealthCheckResponse.SERVING
        assert await status("broken") == health_pb2.HealthCheckResponse.NOT_SERVING
