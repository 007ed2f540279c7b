"""The control plane against a real etcd and real workers: endpoint sets, health, drain,
list, restart. Worker registration is written by hand here (what a worker writes), so these
tests pin the control plane's side of the contract on their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.v1 import controlplane_pb2 as pb
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import Keys
from modelyard_server.workerinfo import ModelInfo, WorkerInfo
from tests.helpers import EndpointFollower as Watcher
from tests.helpers import eventually
from tests.integration.conftest import running_worker

ECHO = [{"name": "echo", "class": "tests.support.models:Echo"}]
#: Registrations written here are never refreshed: their lease outlives any test, so only
#: the control plane's prober (or a test's own revoke) can take a worker out of a set.
LONG_TTL = 600


@pytest_asyncio.fixture
async def control_plane(etcd: EtcdServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings(), refresh_seconds=0.2))
    await plane.start()
    yield plane
    await plane.stop()


async def register(
    client: Any, worker_id: str, address: str, tags: dict[str, str], ttl: int = LONG_TTL
) -> Any:
    lease = await client.lease(ttl)
    info = WorkerInfo(
        worker_id=worker_id,
        address=address,
        models=(ModelInfo(name="echo", task="echo"),),
        tags=tags,
        started_at=time.time(),
    )
    await client.put(Keys().worker(worker_id), info.to_json(), lease=lease)
    return lease


async def test_a_registered_worker_appears_and_a_dead_one_is_withdrawn_by_the_prober(
    control_plane: ControlPlane, etcd_client: Any
) -> None:
    # how fast a dead worker is withdrawn is a goal for bench/controlplane (failure.py)
    watcher = Watcher(control_plane.address, "echo")
    await eventually(lambda: watcher.latest is not None)
    assert watcher.ids() == []  # empty, not an error
    async with running_worker(ECHO) as worker:
        await register(etcd_client, "w1", worker.address, {"device": "cpu"})
        await watcher.until(["w1"], timeout=10)
        await worker.server.stop(None)  # the process is gone; its lease (LONG_TTL) is not
        await watcher.until([], timeout=10)
    await watcher.close()


async def test_selectors_narrow_the_set_and_a_bad_one_is_invalid_argument(
    control_plane: ControlPlane, etcd_client: Any
) -> None:
    async with running_worker(ECHO) as a, running_worker(ECHO) as b:
        await register(etcd_client, "a", a.address, {"device": "cuda", "gpu_memory": "24GiB"})
        await register(etcd_client, "b", b.address, {"device": "cpu"})
        big = Watcher(control_plane.address, "echo", "device=cuda,gpu_memory>=16GiB")
        everyone = Watcher(control_plane.address, "echo")
        await big.until(["a"])
        await everyone.until(["a", "b"])
        await big.close()
        await everyone.close()
    async with grpc.aio.insecure_channel(control_plane.address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        call = stub.WatchEndpoints(pb.WatchEndpointsRequest(model="echo", selector="gpu>>2"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpu>>2" in (caught.value.details() or "")


async def test_drain_and_undrain_are_desired_state_and_unknown_workers_are_not_found(
    control_plane: ControlPlane, etcd_client: Any
) -> None:
    async with (
        running_worker(ECHO) as worker,
        grpc.aio.insecure_channel(control_plane.address) as channel,
    ):
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        await register(etcd_client, "w1", worker.address, {})
        watcher = Watcher(control_plane.address, "echo")
        await watcher.until(["w1"])
        await stub.DrainWorker(pb.DrainWorkerRequest(worker_id="w1"))
        await watcher.until([])
        stored = await etcd_client.get(Keys().desired_worker("w1"))
        assert stored is not None and b'"drain":true' in stored.value
        listed = await stub.ListWorkers(pb.ListWorkersRequest())
        assert [(w.worker_id, w.draining) for w in listed.workers] == [("w1", True)]
        await stub.UndrainWorker(pb.UndrainWorkerRequest(worker_id="w1"))
        await watcher.until(["w1"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DrainWorker(pb.DrainWorkerRequest(worker_id="ghost"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "worker 'ghost' is not registered; registered workers: w1" in (
            caught.value.details() or ""
        )
        await watcher.close()


async def test_list_workers_filters_by_model_and_selector(
    control_plane: ControlPlane, etcd_client: Any
) -> None:
    async with (
        running_worker(ECHO) as worker,
        grpc.aio.insecure_channel(control_plane.address) as channel,
    ):
        await register(etcd_client, "w1", worker.address, {"device": "cpu", "zone": "a"})
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        request = pb.ListWorkersRequest(model="echo", selector="zone=a")
        listed = await list_until(
            stub, request, lambda r: any(w.reachable and w.models[0].serving for w in r.workers)
        )
        assert [w.worker_id for w in listed.workers] == ["w1"]
        assert listed.leader and listed.workers[0].reachable
        assert listed.workers[0].models[0].serving
        none = await stub.ListWorkers(pb.ListWorkersRequest(model="bert"))
        assert list(none.workers) == []


async def list_until(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub,
    request: pb.ListWorkersRequest,
    done: Callable[[pb.ListWorkersResponse], bool],
) -> pb.ListWorkersResponse:
    """ListWorkers until `done(reply)`, for up to 10 s: a replica refuses reads until it
    has read etcd, and a worker is reachable only once the leader has probed it."""
    async with asyncio.timeout(10):
        while True:
            try:
                listed = await stub.ListWorkers(request)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            else:
                if done(listed):
                    return listed
            await asyncio.sleep(0.02)


async def test_a_restarted_control_plane_rebuilds_from_etcd(
    etcd: EtcdServer, etcd_client: Any
) -> None:
    settings = ControlPlaneSettings(port=0, etcd=etcd.settings(), refresh_seconds=0.2)
    async with running_worker(ECHO) as worker:
        await register(etcd_client, "w1", worker.address, {})
        first = ControlPlane(settings)
        await first.start()
        watcher = Watcher(first.address, "echo")
        await watcher.until(["w1"])
        await first.stop()
        await watcher.close()
        second = ControlPlane(settings)
        await second.start()
        again = Watcher(second.address, "echo")
        await again.until(["w1"], timeout=10)
        await again.close()
        await second.stop()


async def test_the_port_file_is_written_once_the_replica_has_read_etcd(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    port_file = tmp_path / "port"
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings(), port_file=port_file))
    await plane.start()
    try:
        async with asyncio.timeout(30):
            while not port_file.exists():  # noqa: ASYNC110 (a file: nothing to await)
                await asyncio.sleep(0.01)
        assert plane.synced.is_set() and int(port_file.read_text()) == plane.port
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            await stub.ListWorkers(pb.ListWorkersRequest(), timeout=5)  # no NOT_SYNCED
    finally:
        await plane.stop()


async def test_before_it_has_read_etcd_a_replica_sends_no_set_and_refuses_reads(
    tmp_path: Path,
) -> None:
    from modelyard_cli.etcd_server import free_port
    from modelyard_server.etcd import EtcdSettings

    unreachable = EtcdSettings(endpoints=[f"127.0.0.1:{free_port()}"])
    port_file = tmp_path / "port"
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=unreachable, port_file=port_file))
    await plane.start()
    try:
        # the port file means "ready": whoever starts it waits for it, and meets no refusal
        assert not port_file.exists()
        watcher = Watcher(plane.address, "echo")
        await asyncio.sleep(0.5)
        # an empty set here would make every composer drop every replica it knows
        assert watcher.latest is None
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListWorkers(pb.ListWorkersRequest())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "has not read etcd yet" in (caught.value.details() or "")
        await watcher.close()
    finally:
        await plane.stop()
