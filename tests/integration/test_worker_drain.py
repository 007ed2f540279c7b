"""Drain as desired state in a real etcd: a drained worker finishes what it has, refuses new
calls and says NOT_SERVING, but keeps running; undrained, it serves again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.client import AsyncClient
from modelyard.errors import Unavailable
from modelyard.v1 import predict_pb2 as pb
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient, Keys
from modelyard_server.workerinfo import DesiredWorker
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from workers.server import PREDICT_SERVICE, Worker

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def client(etcd_client: EtcdClient) -> EtcdClient:
    return etcd_client


@pytest.fixture
def answer(tmp_path: Path) -> Iterator[Gate]:
    """The gate of the worker's model: it answers no call until the test opens it (opened
    at the end in any case, so a failed test still stops its worker)."""
    gate = Gate(tmp_path / "answer")
    yield gate
    gate.open()


def drainable_worker(
    etcd: EtcdServer, answer: Gate, **settings: Any
) -> AbstractAsyncContextManager[Worker]:
    slow = {
        "name": "slow",
        "class": "tests.support.models:Gated",
        "batching": {"max_batch_size": 4, "max_wait_ms": 5},
        "options": {"predict_gate": str(answer)},
    }
    return running_worker([slow], etcd=etcd.settings(), lease_ttl=1.0, **settings)


async def set_drain(client: EtcdClient, worker: Worker, drain: bool) -> None:
    await client.put(Keys().desired_worker(worker.worker_id), DesiredWorker(drain=drain).to_json())


async def statuses(worker: Worker) -> set[int]:
    """The health of the worker, of Predict and of its model."""
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        replies = [
            await stub.Check(health_pb2.HealthCheckRequest(service=name))
            for name in ("", PREDICT_SERVICE, "slow")
        ]
    return {r.status for r in replies}


async def until_statuses(worker: Worker, expected: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await statuses(worker) != {expected}:  # noqa: ASYNC110 (polls over gRPC)
            await asyncio.sleep(0.01)


async def test_drain_finishes_in_flight_calls_refuses_new_ones_and_undrain_reopens(
    etcd: EtcdServer, client: EtcdClient, answer: Gate
) -> None:
    async with (
        drainable_worker(etcd, answer) as worker,
        AsyncClient(worker.address, timeout=60) as calls,
    ):
        in_flight = [asyncio.create_task(calls.predict("slow", x=i)) for i in range(8)]
        await eventually(lambda: worker.service.in_flight == 8)  # and held at the gate
        await set_drain(client, worker, True)
        await until_statuses(worker, NOT_SERVING)
        with pytest.raises(Unavailable, match="this worker is draining"):
            await calls.predict("slow", x=99, timeout=10)  # refused, not held
        assert worker.service.in_flight == 8
        answer.open()
        results = await asyncio.gather(*in_flight)
        assert [r.outputs["x"] for r in results] == list(range(8))  # none lost
        # still running and answering, and still registered (the control plane shows it
        # as draining rather than gone)
        assert [m.state for m in await calls.list_models()] == [pb.MODEL_STATE_DRAINING]
        assert worker.registration is not None and worker.registration.registered

        await set_drain(client, worker, False)
        await until_statuses(worker, SERVING)
        assert (await calls.predict("slow", x=1)).outputs["x"] == 1

        # deleting the key is the same as drain: false
        await set_drain(client, worker, True)
        await until_statuses(worker, NOT_SERVING)
        await client.delete(Keys().desired_worker(worker.worker_id))
        await until_statuses(worker, SERVING)
        assert (await calls.predict("slow", x=2)).outputs["x"] == 2
        await worker.stop()
        assert worker.service.in_flight == 0


async def test_a_worker_drained_before_it_starts_never_serves_and_stops_cleanly(
    etcd: EtcdServer, client: EtcdClient, answer: Gate
) -> None:
    await client.put(Keys().desired_worker("w-drained"), DesiredWorker(drain=True).to_json())
    async with (
        drainable_worker(etcd, answer, worker_id="w-drained") as worker,
        AsyncClient(worker.address) as calls,
    ):
        assert await statuses(worker) == {NOT_SERVING}  # as soon as start returned
        with pytest.raises(Unavailable, match="draining"):
            await calls.predict("slow", x=1)
        await worker.stop()  # shutdown works from the drained state too
        assert worker.service.in_flight == 0
        assert await client.get(Keys().worker("w-drained")) is None


async def test_drain_is_followed_across_an_etcd_restart(
    etcd: EtcdServer, client: EtcdClient, answer: Gate
) -> None:
    async with drainable_worker(etcd, answer) as worker:
        assert worker.desired_state is not None
        etcd.restart()  # breaks the watch: the worker reads the key again and re-watches
        await set_drain(client, worker, True)
        await until_statuses(worker, NOT_SERVING, timeout=15)  # after its retry backoff
        await set_drain(client, worker, False)
        await until_statuses(worker, SERVING)


async def test_an_unreadable_desired_state_is_ignored(
    etcd: EtcdServer, client: EtcdClient, answer: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workers.desired_state")

    def ignored() -> int:
        return sum("ignoring unreadable desired state" in r.getMessage() for r in caplog.records)

    async with drainable_worker(etcd, answer) as worker:
        key = Keys().desired_worker(worker.worker_id)
        await set_drain(client, worker, True)
        await until_statuses(worker, NOT_SERVING)
        await client.put(key, b"{not json")
        await client.put(key, b'{"drain": "perhaps"}')
        await eventually(lambda: ignored() == 2)  # the worker has seen both
        assert await statuses(worker) == {NOT_SERVING}  # the last good state stays
        await client.put(key, b'{"drain": false, "reason": "from a newer version"}')
        await until_statuses(worker, SERVING)
