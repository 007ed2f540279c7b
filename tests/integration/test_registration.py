"""A worker's registration in a real etcd: written once its models load, kept alive under a
lease, gone at once on a graceful stop and within the TTL after a crash, and back by itself
after the worker or etcd was away. A worker that cannot register keeps serving."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from modelyard.client import AsyncClient
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient, Keys
from modelyard_server.workerinfo import ModelInfo, WorkerInfo
from tests.helpers import eventually
from tests.integration.conftest import running_worker, worker_process, write_config
from tests.support.models import Gate
from workers.registration import Registration
from workers.server import REGISTRATION_HEALTH, Worker
from workers.settings import WorkerSettings, load_settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TTL = 1.0
#: For a worker whose key must not expire while the test watches it: a key gone within a
#: few seconds was then revoked, not left to run out.
LONG_TTL = 30.0
#: How long a step may take on a busy host before the test gives up on it.
PATIENCE = 10.0
MODELS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "class": "tests.support.models:Echo",
        "batching": {"max_queue_size": 32},
    },
    {"name": "broken", "class": "tests.support.models:BrokenLoad"},
]


@pytest.fixture
def client(etcd_client: EtcdClient) -> EtcdClient:
    return etcd_client


def registering_worker(etcd: EtcdServer, **settings: Any) -> AbstractAsyncContextManager[Worker]:
    """A started worker that registers in `etcd`, stopped (gracefully) at the end."""
    return running_worker(
        MODELS, etcd=etcd.settings(), lease_ttl=TTL, tags={"zone": "ci"}, **settings
    )


async def registered_info(client: EtcdClient, worker_id: str) -> tuple[WorkerInfo, int] | None:
    """The WorkerInfo under the worker's key and the lease it is bound to, if any."""
    got = await client.get(Keys().worker(worker_id))
    return None if got is None else (WorkerInfo.from_json(got.value), int(got.lease))


async def until_key(
    client: EtcdClient, worker_id: str, *, present: bool, timeout: float = PATIENCE
) -> float:
    """Seconds until the worker's key is there (or gone); fails after `timeout`."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while (await registered_info(client, worker_id) is not None) != present:  # noqa: ASYNC110 (polls etcd)
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def registration_health(worker: Worker) -> int:
    async with grpc.aio.insecure_channel(worker.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=REGISTRATION_HEALTH)
        )
    return int(reply.status)


async def test_registers_its_ready_models_and_deregisters_at_once_on_stop(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    async with registering_worker(etcd) as worker:
        await until_key(client, worker.worker_id, present=True)
        await check_registration(client, worker)
        await worker.stop()
        assert await registered_info(client, worker.worker_id) is None  # revoked, not expired


async def check_registration(client: EtcdClient, worker: Worker) -> None:
    assert worker.worker_id == f"{socket.gethostname()}-{worker.port}"
    found = await registered_info(client, worker.worker_id)
    assert found is not None
    info, lease = found
    assert info.worker_id == worker.worker_id
    assert info.address == worker.address
    assert info.models == (
        ModelInfo(name="echo", task="echo", version=info.models[0].version, concurrency=1),
    )
    assert info.models[0].version  # derived from the class when not configured
    assert info.tags["zone"] == "ci" and info.tags["device"] == "cpu"
    assert info.capacity == 32  # the failed model holds no requests
    assert 0 < info.started_at <= time.time()
    assert lease == worker.registration.lease_id if worker.registration else False
    assert await registration_health(worker) == SERVING


async def test_a_graceful_stop_withdraws_the_worker_before_it_drains(
    etcd: EtcdServer, client: EtcdClient, tmp_path: Path
) -> None:
    answer = Gate(tmp_path / "answer")  # the model answers nothing until the test opens it
    slow = {
        "name": "slow",
        "class": "tests.support.models:Gated",
        "batching": {"max_batch_size": 4},
        "options": {"predict_gate": str(answer)},
    }
    settings = {"etcd": etcd.settings(), "lease_ttl": LONG_TTL, "grace_seconds": 60}
    async with (
        running_worker([slow], **settings) as worker,
        AsyncClient(worker.address, timeout=60) as calls,
    ):
        await until_key(client, worker.worker_id, present=True)
        in_flight = [asyncio.create_task(calls.predict("slow", x=i)) for i in range(4)]
        await eventually(lambda: worker.service.in_flight == 4)
        stopping = asyncio.create_task(worker.stop())
        try:
            await until_key(client, worker.worker_id, present=False, timeout=5)
            assert worker.service.in_flight == 4  # withdrawn while its calls still run
        finally:
            answer.open()
        assert [r.outputs["x"] for r in await asyncio.gather(*in_flight)] == [0, 1, 2, 3]
        await stopping
        assert worker.service.in_flight == 0


async def test_a_worker_without_etcd_neither_registers_nor_reports_registration() -> None:
    async with running_worker(MODELS[:1]) as worker:
        assert worker.registration is None
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registration_health(worker)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_etcd_down_keeps_the_worker_serving_and_it_registers_again_when_etcd_returns(
    etcd: EtcdServer, client: EtcdClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.registration")
    async with (
        registering_worker(etcd, advertise_address="worker-a.example:7000") as worker,
        AsyncClient(worker.address) as calls,
    ):
        assert worker.registration is not None
        registration = worker.registration
        await asyncio.wait_for(registration.registered_event.wait(), PATIENCE)
        first_lease = registration.lease_id
        etcd.stop()
        await eventually(lambda: not registration.registered, timeout=PATIENCE)
        assert await registration_health(worker) == NOT_SERVING
        await asyncio.sleep(TTL * 1.5)  # longer than the lease, by the worker's clock
        assert (await calls.predict("echo", x=1)).outputs == {"x": 1}
        etcd.start()
        await asyncio.wait_for(registration.registered_event.wait(), PATIENCE)
        assert await registration_health(worker) == SERVING
        assert (await calls.predict("echo", x=2)).outputs == {"x": 2}
        found = await registered_info(client, worker.worker_id)
        assert found is not None
        assert found[0].address == "worker-a.example:7000"
        # the lease it serves under now: a new one, or the old one if etcd kept it (a
        # restarted etcd gives every lease it recovers a whole TTL again, and the worker
        # resumes its lease first); which one depends on when etcd answered
        assert found[1] == registration.lease_id
        said = "kept" if registration.lease_id == first_lease else "registered under new"
        assert f": {said} lease {registration.lease_id:x}" in caplog.text  # and says which
    # one warning when it was lost and one when it came back, however many retries between
    changes = [
        r.getMessage()
        for r in caplog.records
        if r.name == "workers.registration" and r.levelno >= logging.WARNING
    ]
    assert len(changes) == 2, changes
    assert changes[0].startswith("not registered") and " again after " in changes[1]


async def test_a_worker_started_while_etcd_is_down_serves_and_registers_later(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    etcd.stop()
    async with AsyncExitStack() as stack:
        async with asyncio.timeout(30):  # etcd stays away: waiting for it would never end
            worker = await stack.enter_async_context(registering_worker(etcd))
        calls = await stack.enter_async_context(AsyncClient(worker.address))
        assert (await calls.predict("echo", x=1)).outputs == {"x": 1}
        assert await registration_health(worker) == NOT_SERVING
        etcd.start()
        assert worker.registration is not None
        await asyncio.wait_for(worker.registration.registered_event.wait(), PATIENCE)
        assert await registered_info(client, worker.worker_id) is not None


async def test_a_lease_lost_in_etcd_is_replaced_by_a_new_one(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    async with registering_worker(etcd) as worker:
        assert worker.registration is not None
        await asyncio.wait_for(worker.registration.registered_event.wait(), PATIENCE)
        lost = worker.registration.lease_id
        await client.revoke_lease(lost)  # as if etcd had expired it
        assert await registered_info(client, worker.worker_id) is None
        # the next refresh (every TTL/3) finds the lease gone and registers again
        await until_key(client, worker.worker_id, present=True, timeout=3 * TTL)
        assert worker.registration.lease_id != lost


async def test_changed_info_is_put_again_under_the_same_lease(
    etcd: EtcdServer, client: EtcdClient
) -> None:
    current = WorkerInfo(worker_id="w", address="127.0.0.1:1")
    registration = Registration(client, Keys().worker("w"), lambda: current, ttl=TTL)
    registration.start()
    await asyncio.wait_for(registration.registered_event.wait(), PATIENCE)
    lease = registration.lease_id
    current = WorkerInfo(worker_id="w", address="127.0.0.1:1", models=(ModelInfo(name="m"),))
    registration.update()

    async def models() -> tuple[ModelInfo, ...]:
        found = await registered_info(client, "w")
        return found[0].models if found else ()

    async with asyncio.timeout(5):
        while await models() != (ModelInfo(name="m"),):  # noqa: ASYNC110 (polls etcd)
            await asyncio.sleep(0.02)
    assert registration.lease_id == lease
    await registration.close()
    assert await registered_info(client, "w") is None


def process_config(tmp_path: Path, etcd: EtcdServer, worker_id: str, ttl: float) -> Path:
    return write_config(
        tmp_path / "worker.yaml",
        MODELS[:1],
        worker_id=worker_id,
        etcd={"endpoints": [etcd.endpoint]},
        lease_ttl=ttl,
    )


async def test_a_killed_worker_process_disappears_once_its_lease_runs_out(
    tmp_path: Path, etcd: EtcdServer, client: EtcdClient
) -> None:
    config = process_config(tmp_path, etcd, "proc-kill", TTL)
    with worker_process(config) as (process, address):
        await until_key(client, "proc-kill", present=True)
        found = await registered_info(client, "proc-kill")
        assert found is not None and found[0].address == address
        process.kill()  # nothing revokes its lease: etcd expires it
        await until_key(client, "proc-kill", present=False, timeout=TTL + PATIENCE)


async def test_a_frozen_worker_process_drops_out_and_comes_back_by_itself(
    tmp_path: Path, etcd: EtcdServer, client: EtcdClient
) -> None:
    # long enough that the key outlives the worker's exit below unless it is revoked
    ttl = 5.0
    config = process_config(tmp_path, etcd, "proc-stop", ttl)
    with worker_process(config) as (process, _):
        await until_key(client, "proc-stop", present=True)
        process.send_signal(signal.SIGSTOP)
        gone = await until_key(client, "proc-stop", present=False, timeout=ttl + PATIENCE)
        assert gone > ttl / 3  # the last refresh (every ttl/3) still counted for a while
        process.send_signal(signal.SIGCONT)
        await until_key(client, "proc-stop", present=True)  # a new lease, by itself
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
        # revoked on the way out: the new lease had seconds left to run
        assert await registered_info(client, "proc-stop") is None


def test_etcd_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_WORKER_ETCD__ENDPOINTS", '["10.0.0.5:2379", "10.0.0.6:2379"]')
    monkeypatch.setenv("MODELYARD_WORKER_ETCD__PREFIX", "/staging")
    monkeypatch.setenv("MODELYARD_WORKER_LEASE_TTL", "5")
    settings = load_settings(None)
    assert settings.etcd is not None
    assert settings.etcd.endpoints == ["10.0.0.5:2379", "10.0.0.6:2379"]
    assert settings.etcd.prefix == "/staging"
    assert settings.lease_ttl == 5.0
    monkeypatch.delenv("MODELYARD_WORKER_ETCD__ENDPOINTS")
    monkeypatch.delenv("MODELYARD_WORKER_ETCD__PREFIX")
    assert load_settings(None).etcd is None  # standalone unless told otherwise


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lease_ttl": 0.5}, "greater than or equal to 1"),
        ({"advertise_address": "worker-a"}, "must look like host:port"),
        ({"worker_id": "a/b"}, "should match pattern"),
    ],
)
def test_bad_registration_settings_are_refused(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerSettings(**setting)
