"""Loading and draining, seen from outside: health, refusals, and in-flight work."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.client import AsyncClient
from modelyard.errors import Unavailable
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from workers.server import StartupError, Worker
from workers.settings import WorkerSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_loading_model_is_not_serving_and_refuses_calls_until_ready(
    tmp_path: Path,
) -> None:
    loaded = Gate(tmp_path / "loaded")  # the model's load returns once the test opens it
    worker = Worker(
        WorkerSettings(
            port=0,
            models=[
                {
                    "name": "slow-load",
                    "class": "tests.support.models:Gated",
                    "options": {"load_gate": str(loaded)},
                }
            ],
        )
    )
    starting = asyncio.create_task(worker.start())
    await eventually(lambda: worker.port != 0)  # bound; listening follows
    try:
        async with (
            grpc.aio.insecure_channel(worker.address) as channel,
            AsyncClient(worker.address) as client,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest
            # waits for the server to listen; the model cannot finish loading meanwhile
            first = await health.Check(check(service=""), wait_for_ready=True, timeout=10)
            assert first.status == NOT_SERVING
            assert (await health.Check(check(service="slow-load"))).status == NOT_SERVING
            with pytest.raises(Unavailable, match="still loading"):
                await client.predict("slow-load", x=1)
            loaded.open()
            await starting
            assert (await health.Check(check(service=""))).status == SERVING
            assert (await health.Check(check(service="slow-load"))).status == SERVING
            assert (await client.predict("slow-load", x=1)).outputs["x"] == 1
    finally:
        loaded.open()
        await starting
        await worker.stop()


async def test_draining_finishes_in_flight_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    answer = Gate(tmp_path / "answer")  # the model answers nothing until the test opens it
    models = [
        {
            "name": "slow",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 4, "max_wait_ms": 5},
            "options": {"predict_gate": str(answer)},
        }
    ]
    worker = Worker(WorkerSettings(port=0, models=models, grace_seconds=60))
    await worker.start()
    async with AsyncClient(worker.address, timeout=60) as client:
        in_flight = [asyncio.create_task(client.predict("slow", x=i)) for i in range(8)]
        await eventually(lambda: worker.service.in_flight == 8)  # all accepted before draining
        stopping = asyncio.create_task(worker.stop())
        try:
            await eventually(lambda: worker.service.draining)  # held: none has finished
            with pytest.raises(Unavailable, match="draining"):
                await client.predict("slow", x=99, timeout=10)  # refused, not held
        finally:
            answer.open()
        results = await asyncio.gather(*in_flight)
        assert [r.outputs["x"] for r in results] == list(range(8))  # none lost
        await stopping
        assert worker.service.in_flight == 0  # every call finished within the grace


async def test_strict_mode_refuses_to_start_when_a_model_fails() -> None:
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "broken", "class": "tests.support.models:BrokenLoad"},
    ]
    worker = Worker(WorkerSettings(port=0, models=models, strict=True))
    with pytest.raises(StartupError, match="broken: FileNotFoundError"):
        await worker.start()
    await worker.abort()


async def test_an_unimportable_class_fails_that_model_only() -> None:
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "ghost", "class": "no_such_package.models:Ghost"},
    ]
    async with running_worker(models) as worker, AsyncClient(worker.address) as client:
        assert (await client.predict("echo", x=1)).outputs == {"x": 1}
        with pytest.raises(Unavailable, match=r"cannot import 'no_such_package\.models:Ghost'"):
            await client.predict("ghost", x=1)


async def test_stopping_frees_the_metrics_port() -> None:
    models = [{"name": "echo", "class": "tests.support.models:Echo"}]
    async with running_worker(models, metrics_port=0) as worker:
        port = worker.metrics_port
        assert port
        assert b"modelyard_worker_requests" in await asyncio.to_thread(scrape, port)
    with socket.socket() as probe:
        # SO_REUSEADDR: our own scrape may leave the port in TIME_WAIT, which is no listener
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # fails with EADDRINUSE while the server listens


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read()  # type: ignore[no-any-return]
