"""A real worker server and real gRPC clients, with weightless models: the service
conventions, batching and isolation, streaming and cancellation, and every bad input."""

from __future__ import annotations

import asyncio
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
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from workers.server import Worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Models whose calls wait at a gate (see tests.support.models.Gated) until their test
#: opens it: a test then knows which calls are held and which queue behind them.
GATED = ("batched", "tiny-queue")


def served_models(gates: dict[str, Gate]) -> list[dict[str, Any]]:
    return [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {
            "name": "batched",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 8, "max_wait_ms": 20},
            "options": {"predict_gate": str(gates["batched"])},
        },
        {
            "name": "tiny-queue",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 1, "max_queue_size": 2},
            "options": {"predict_gate": str(gates["tiny-queue"])},
        },
        {"name": "ticker", "class": "tests.support.models:Ticker"},
        {
            "name": "picky",
            "class": "tests.support.models:Picky",
            "batching": {"max_batch_size": 4, "max_wait_ms": 20},
        },
        {"name": "broken", "class": "tests.support.models:BrokenLoad"},
    ]


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gate]:
    folder = tmp_path_factory.mktemp("gates")
    return {name: Gate(folder / name) for name in GATED}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(gates: dict[str, Gate]) -> AsyncIterator[Worker]:
    models = served_models(gates)
    async with running_worker(models, tags={"zone": "test"}, max_message_bytes=64 * 1024) as w:
        try:
            yield w
        finally:  # a failed test must not leave calls held while the worker stops
            for gate in gates.values():
                gate.open()


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
    client: AsyncClient, worker: Worker, gates: dict[str, Gate]
) -> None:
    runner = worker.registry.get("batched").runner

    def in_flight() -> int:
        return worker.service.load().model_in_flight["batched"]

    first = asyncio.create_task(client.predict("batched", x=0))
    # its batch closed (max_wait_ms) and waits at the gate on the model's thread
    await eventually(lambda: in_flight() == 1 and runner.queue_depth == 0)
    rest = [asyncio.create_task(client.predict("batched", x=i)) for i in range(1, 16)]
    await eventually(lambda: runner.queue_depth == 15)  # all queued behind it
    gates["batched"].open()
    results = await asyncio.gather(first, *rest)
    assert [r.outputs["x"] for r in results] == list(range(16))
    # the queue goes in batches of at most 8: the 15 queued calls make one of 8, one of 7
    sizes = [r.outputs["batch_size"] for r in results]
    assert sizes[0] == 1 and sorted(sizes[1:]) == [7] * 7 + [8] * 8, sizes
    observed = worker.metrics.registry.get_sample_value(
        "modelyard_worker_batch_size_count", {"model": "batched"}
    )
    assert observed == 3  # three model calls for sixteen requests


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
    client: AsyncClient, worker: Worker, gates: dict[str, Gate]
) -> None:
    runner = worker.registry.get("tiny-queue").runner
    calls = [asyncio.create_task(client.predict("tiny-queue", x=i)) for i in range(6)]
    # held at the gate, the admitted calls fill the queue (max_queue_size 2: one call on
    # the model's thread and one waiting for it) ...
    await eventually(lambda: sum(c.done() for c in calls) == 4 and runner.queue_depth == 2)
    gates["tiny-queue"].open()  # ... and the four others were refused meanwhile
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused: list[ResourceExhausted] = [r for r in results if isinstance(r, ResourceExhausted)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert (len(refused), len(served)) == (4, 2), results
    assert "queue limit" in refused[0].message


async def test_stream_sends_chunks_then_the_final_result(client: AsyncClient) -> None:
    events = [e async for e in client.predict_stream("ticker", count=3)]
    assert [e.outputs for e in events[:-1]] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert events[-1].final and events[-1].outputs == {"ticks": 3}


#: Ticks at the default 10 ms: a stream that holds the model's (one) thread for a minute
#: unless it is stopped, so a call after it that must be served within 30 s needs the
#: model to have stopped.
LONG = 6_000


async def test_cancelling_a_stream_stops_the_model(client: AsyncClient) -> None:
    stream = client.predict_stream("ticker", count=LONG)
    async for event in stream:
        if event.index == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]  # it is an async generator
    result = await client.predict("ticker", count=1, timeout=30)
    assert result.outputs == {"ticks": 1}


async def test_a_stream_past_its_deadline_stops_the_model(client: AsyncClient) -> None:
    with pytest.raises(DeadlineExceeded):
        async for _ in client.predict_stream("ticker", count=LONG, timeout=0.3):
            pass
    result = await client.predict("ticker", count=2, timeout=30)
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


async def test_list_models_reports_state_and_reason(client: AsyncClient, worker: Worker) -> None:
    states = {m.model: m for m in await client.list_models()}
    assert list(states) == [m.name for m in worker.settings.models]  # in configured order
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
    batched = await client.metadata("batched")
    assert batched.batching.max_batch_size == 8
    assert batched.batching.max_wait.ToTimedelta() == timedelta(milliseconds=20)
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
