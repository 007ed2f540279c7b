"""The cluster as the README runs it: a real etcd, control-plane processes, and worker
processes that register themselves. Failures are real signals (kill -9, SIGSTOP, etcd
restarts), and what is asserted is what a composer or an operator would see."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc.aio
import pytest
import pytest_asyncio
import yaml

from modelyard.routed_client import RoutedClient
from modelyard.v1 import controlplane_pb2 as pb
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import start_service, stop_service
from tests.helpers import EndpointFollower, eventually

T = TypeVar("T")
MODELYARD = str(Path(sys.executable).parent / "modelyard")
LEASE_TTL = 1.0
#: For a worker whose lease must not run out while a test watches it: if such a worker
#: leaves an endpoint set, the prober took it out (or a graceful stop revoked its lease).
LONG_LEASE = {"lease_ttl": 600.0}
#: How long a step may take on a busy host (processes start, probes, elections) before a
#: test gives up on it. Speed goals live in bench/.
PATIENCE = 15.0
SLOW = {
    "name": "slow",
    "class": "tests.support.models:SlowEcho",
    "batching": {"max_batch_size": 1, "max_queue_size": 64},
    "options": {"delay_ms": 20},
}


class Cluster:
    """Processes of one test; everything left running is killed at the end."""

    def __init__(self, etcd: EtcdServer, tmp_path: Path) -> None:
        self.etcd = etcd
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def control_plane(self) -> tuple[subprocess.Popen[bytes], str]:
        process, address = start_service(["controlplane", "--etcd", self.etcd.endpoint], timeout=30)
        self.processes.append(process)
        return process, address

    def worker(self, name: str, **extra: Any) -> tuple[subprocess.Popen[bytes], str]:
        config = self.tmp_path / f"{name}.yaml"
        settings = {
            "worker_id": name,
            "models": [SLOW],
            "etcd": {"endpoints": [self.etcd.endpoint]},
            "lease_ttl": LEASE_TTL,
            "tags": {"zone": name},
            **extra,
        }
        config.write_text(yaml.safe_dump(settings))
        process, address = start_service(["worker", "--config", str(config)], timeout=60)
        self.processes.append(process)
        return process, address

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot die
                process.kill()
                process.wait(10)


@pytest.fixture
def cluster(etcd: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(etcd, tmp_path)
    yield running
    running.close()


@pytest_asyncio.fixture
async def follower_factory() -> AsyncIterator[Any]:
    followers: list[EndpointFollower] = []

    def follow(address: str, model: str = "slow") -> EndpointFollower:
        follower = EndpointFollower(address, model)
        followers.append(follower)
        return follower

    yield follow
    for follower in followers:
        await follower.close()


async def test_workers_register_and_the_cli_lists_and_filters_them(cluster: Cluster) -> None:
    _, control = cluster.control_plane()
    cluster.worker("a")
    cluster.worker("b", models=[SLOW, {"name": "echo", "class": "tests.support.models:Echo"}])
    env = {**os.environ, "MODELYARD_CONTROLPLANE_ADDRESS": control, "COLUMNS": "250"}

    def listed(*args: str) -> str:
        done = subprocess.run(
            [MODELYARD, "workers", *args], capture_output=True, text=True, env=env, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    await eventually(lambda: "│ a " in listed() and "│ b " in listed(), timeout=30)
    everything = listed()
    assert "zone=a" in everything and "device=cpu" in everything and "reachable" in everything
    only_echo = listed("--model", "echo")
    assert "│ b " in only_echo and "│ a " not in only_echo


async def test_kill_9_is_withdrawn_by_the_prober_and_sigstop_once_its_lease_runs_out(
    cluster: Cluster, follower_factory: Any
) -> None:
    _, control = cluster.control_plane()
    killed, _ = cluster.worker("killed", **LONG_LEASE)
    stopped, _ = cluster.worker("stopped")
    cluster.worker("steady")
    follower = follower_factory(control)
    await follower.until(["killed", "steady", "stopped"], timeout=PATIENCE)

    killed.kill()  # its lease would outlive the test: only the prober can withdraw it
    await follower.until(["steady", "stopped"], timeout=PATIENCE)

    os.kill(stopped.pid, signal.SIGSTOP)  # hung: its connection stays open, it answers nothing
    await follower.until(["steady"], timeout=LEASE_TTL + PATIENCE)
    os.kill(stopped.pid, signal.SIGCONT)
    await follower.until(["steady", "stopped"], timeout=PATIENCE)  # back by itself


async def test_an_etcd_restart_loses_nobody(cluster: Cluster, follower_factory: Any) -> None:
    _, control = cluster.control_plane()
    cluster.worker("a")
    cluster.worker("b")
    follower = follower_factory(control)
    await follower.until(["a", "b"], timeout=PATIENCE)
    cluster.etcd.stop()
    await asyncio.sleep(LEASE_TTL + 1.0)
    assert follower.ids() == ["a", "b"]  # nothing is withdrawn because etcd is away
    cluster.etcd.start()
    await asyncio.sleep(LEASE_TTL + 1.0)  # leases may have lapsed meanwhile: re-registration
    await follower.until(["a", "b"], timeout=PATIENCE)


async def test_a_killed_control_plane_restarts_from_etcd_and_clients_keep_serving(
    cluster: Cluster, etcd: EtcdServer
) -> None:
    plane, control = cluster.control_plane()
    cluster.worker("a")
    async with RoutedClient([control], timeout=10) as client:
        assert await client.wait_for_endpoints("slow", timeout=PATIENCE)  # a is registered
        assert (await client.predict("slow", x=1)).outputs["x"] == 1
        plane.kill()
        plane.wait(10)
        # the control plane is gone: calls go on over the last known endpoints
        results = await asyncio.gather(*(client.predict("slow", x=i) for i in range(10)))
        assert [r.outputs["x"] for r in results] == list(range(10))
        port = control.rpartition(":")[2]
        restarted = subprocess.Popen(  # noqa: ASYNC220  (starting it does not block)
            [sys.executable, "-m", "modelyard_cli", "controlplane", "--etcd", etcd.endpoint,
             "--port", port],
        )  # fmt: skip
        cluster.processes.append(restarted)
        cluster.worker("b")  # appears only through the restarted control plane
        await eventually(lambda: {e.worker_id for e in client.endpoints("slow")} == {"a", "b"}, 30)


async def test_leader_failover_hands_probing_over(cluster: Cluster, follower_factory: Any) -> None:
    first, first_address = cluster.control_plane()
    second, second_address = cluster.control_plane()

    async def leader_of(address: str) -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            return bool((await stub.ListWorkers(pb.ListWorkersRequest(), timeout=5)).leader)

    async def leaders() -> list[bool]:
        return [await leader_of(first_address), await leader_of(second_address)]

    elected = await until_true(leaders, any)  # one has won the election
    assert elected.count(True) == 1
    old, survivor = (first, second_address) if elected[0] else (second, first_address)
    old.kill()  # its election lease runs out, and then the survivor takes over
    await until_true(lambda: leader_of(survivor), bool)
    # the new leader probes: a worker that dies now (its lease outliving the test) is
    # withdrawn from its sets by the prober
    worker, _ = cluster.worker("late", **LONG_LEASE)
    follower = follower_factory(survivor)
    await follower.until(["late"], timeout=PATIENCE)
    worker.kill()
    await follower.until([], timeout=PATIENCE)


async def until_true(read: Callable[[], Awaitable[T]], holds: Callable[[T], bool]) -> T:
    """Reads until `holds(value)`, for up to PATIENCE seconds; returns that value."""
    async with asyncio.timeout(PATIENCE):
        while not holds(value := await read()):  # noqa: ASYNC110 (polls over gRPC)
            await asyncio.sleep(0.1)
    return value


async def test_drain_loses_no_request_in_flight_and_undrain_brings_it_back(
    cluster: Cluster, follower_factory: Any
) -> None:
    _, control = cluster.control_plane()
    cluster.worker("a")
    # the one replica left once a drains: a 1 s lease refreshed late on a busy host would
    # take it out of the set for a moment, and calls then find no replica
    cluster.worker("b", **LONG_LEASE)
    follower = follower_factory(control)
    await follower.until(["a", "b"], timeout=PATIENCE)
    env = {**os.environ, "MODELYARD_CONTROLPLANE_ADDRESS": control, "COLUMNS": "250"}
    async with RoutedClient([control], timeout=60) as client:
        assert await client.wait_for_endpoints("slow", timeout=PATIENCE)
        await eventually(lambda: len(client.endpoints("slow")) == 2, timeout=PATIENCE)
        calls = [asyncio.create_task(client.predict("slow", x=i)) for i in range(60)]
        await asyncio.sleep(0.2)
        drained = await asyncio.to_thread(
            subprocess.run, [MODELYARD, "drain", "a"], capture_output=True, text=True, env=env
        )
        assert drained.returncode == 0, drained.stderr
        results = await asyncio.gather(*calls)
        assert [r.outputs["x"] for r in results] == list(range(60))  # none lost
        await follower.until(["b"], timeout=PATIENCE)
        listed = await asyncio.to_thread(
            subprocess.run, [MODELYARD, "workers"], capture_output=True, text=True, env=env
        )
        assert "draining" in listed.stdout  # in a's state
        undrained = await asyncio.to_thread(
            subprocess.run, [MODELYARD, "undrain", "a"], capture_output=True, text=True, env=env
        )
        assert undrained.returncode == 0
        await follower.until(["a", "b"], timeout=PATIENCE)
        unknown = await asyncio.to_thread(
            subprocess.run, [MODELYARD, "drain", "ghost"], capture_output=True, text=True, env=env
        )
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


async def test_graceful_stops_deregister_at_once(cluster: Cluster) -> None:
    _, control = cluster.control_plane()
    # a lease that would outlive the test: gone from the list means revoked on the way out
    worker, _ = cluster.worker("a", **LONG_LEASE)
    env = {**os.environ, "MODELYARD_CONTROLPLANE_ADDRESS": control, "COLUMNS": "250"}

    def listed() -> str:
        done = subprocess.run(
            [MODELYARD, "workers"], capture_output=True, text=True, env=env, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # the control plane learns of changes through its watch: the list follows, not at once
    await eventually(lambda: "│ a " in listed(), timeout=30)
    assert stop_service(worker) == 0
    await eventually(lambda: "│ a " not in listed(), timeout=30)


async def test_a_hung_control_plane_is_left_for_another_replica(cluster: Cluster) -> None:
    hung, first = cluster.control_plane()
    _, second = cluster.control_plane()
    cluster.worker("a")
    async with RoutedClient([first, second], timeout=10, idle_timeout_s=2.0) as client:
        assert await client.wait_for_endpoints("slow", timeout=PATIENCE)  # a is registered
        assert (await client.predict("slow", x=1)).outputs["x"] == 1
        os.kill(hung.pid, signal.SIGSTOP)  # its connections stay open; it says nothing more
        cluster.worker("b")  # only a replica that still works can tell the client about it
        await eventually(lambda: {e.worker_id for e in client.endpoints("slow")} == {"a", "b"}, 30)
