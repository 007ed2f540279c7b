"""The leader's probe results reach etcd in order, and only results about the current
registration of a worker, written while this replica leads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.health_recorder import RETRY, HealthRecorder
from modelyard_server.aio import cancel_and_wait
from modelyard_server.workerinfo import WorkerHealth
from tests.support.clock import FakeClock
from tests.unit.controlplane.cluster import KEYS, Cluster
from tests.unit.controlplane.fakes import Write, settle, until


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
async def recorder(cluster: Cluster) -> AsyncIterator[HealthRecorder]:
    recorder = HealthRecorder(
        view=cluster.view, store=cluster.store, keys=KEYS, is_leader=lambda: cluster.leader
    )
    task = asyncio.ensure_future(recorder.run())
    yield recorder
    await cancel_and_wait(task)


def put(worker_id: str, health: WorkerHealth) -> Write:
    return ("put", f"/modelyard/health/workers/{worker_id}", health.to_json().decode())


async def written_after(cluster: Cluster, recorder: HealthRecorder) -> list[Write]:
    """Everything written up to and including a marker result recorded now (results are
    written in order, so what was recorded before it has been dealt with)."""
    marker = WorkerHealth(registration=cluster.register("marker"))
    recorder.record("marker", marker)
    await until(lambda: put("marker", marker) in cluster.store.writes)
    return [w for w in cluster.store.take() if w != put("marker", marker)]


async def test_results_are_written_in_the_order_probers_reported_them(
    cluster: Cluster, recorder: HealthRecorder
) -> None:
    registration = cluster.register("w1", "echo")
    down = WorkerHealth(models={"echo": False}, registration=registration)
    up = WorkerHealth(models={"echo": True}, registration=registration)

    recorder.record("w1", down)
    recorder.record("w1", up)

    assert await written_after(cluster, recorder) == [put("w1", down), put("w1", up)]


async def test_a_follower_writes_nothing(cluster: Cluster, recorder: HealthRecorder) -> None:
    registration = cluster.register("w1", "echo")
    cluster.leader = False
    recorder.record("w1", WorkerHealth(registration=registration))
    await settle()  # the result is dealt with while a follower
    cluster.leader = True  # for the marker

    assert await written_after(cluster, recorder) == []


async def test_results_about_a_vanished_worker_are_dropped(
    cluster: Cluster, recorder: HealthRecorder
) -> None:
    registration = cluster.register("w1", "echo")
    cluster.vanish("w1")

    recorder.record("w1", WorkerHealth(reachable=False, registration=registration))

    assert await written_after(cluster, recorder) == []


async def test_results_about_an_earlier_registration_are_dropped(
    cluster: Cluster, recorder: HealthRecorder
) -> None:
    earlier = cluster.register("w1", "echo")
    cluster.register("w1", "echo")  # the worker restarted before the old result was written

    recorder.record("w1", WorkerHealth(reachable=False, registration=earlier))

    assert await written_after(cluster, recorder) == []


async def test_a_failed_write_is_logged_and_later_results_are_still_written(
    cluster: Cluster, recorder: HealthRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    registration = cluster.register("w1", "echo")
    lost = WorkerHealth(models={"echo": False}, registration=registration)
    kept = WorkerHealth(models={"echo": True}, registration=registration)
    cluster.store.failure = TimeoutError()
    caplog.set_level(logging.WARNING, "controlplane.health_recorder")

    recorder.record("w1", lost)
    await until(lambda: "cannot record health of w1" in caplog.text)
    cluster.store.failure = None
    recorder.record("w1", kept)

    assert await written_after(cluster, recorder) == [put("w1", kept)]
    assert "cannot record health of w1: etcd did not answer in time" in caplog.text


async def test_a_failed_write_is_tried_again_until_etcd_takes_it(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # a prober reports a change once: dropped, a dead worker would stay in the sets
    clock = FakeClock()
    async with recording(cluster, clock) as recorder:
        registration = cluster.register("w1", "echo")
        gone = WorkerHealth(reachable=False, registration=registration)
        cluster.store.failure = TimeoutError()  # etcd electing a leader
        caplog.set_level(logging.WARNING, "controlplane.health_recorder")

        recorder.record("w1", gone)
        await until(lambda: clock.sleepers == 1)  # failed once, pausing
        await clock.advance(RETRY.cap * 2)
        await until(lambda: caplog.text.count("cannot record health of w1") >= 2)
        await until(lambda: clock.sleepers == 1)
        cluster.store.failure = None  # etcd has a leader again
        await clock.advance(RETRY.cap * 2)

        await until(lambda: cluster.store.writes == [put("w1", gone)])


async def test_a_failed_write_is_given_up_once_this_replica_no_longer_leads(
    cluster: Cluster,
) -> None:
    clock = FakeClock()
    async with recording(cluster, clock) as recorder:
        registration = cluster.register("w1", "echo")
        cluster.store.failure = TimeoutError()
        recorder.record("w1", WorkerHealth(reachable=False, registration=registration))
        await until(lambda: clock.sleepers == 1)
        cluster.leader = False  # the new leader probes, and writes, for itself
        cluster.store.failure = None
        await clock.advance(RETRY.cap * 2)
        cluster.leader = True  # for the marker

        assert await written_after(cluster, recorder) == []


@contextlib.asynccontextmanager
async def recording(cluster: Cluster, clock: FakeClock) -> AsyncIterator[HealthRecorder]:
    recorder = HealthRecorder(
        view=cluster.view,
        store=cluster.store,
        keys=KEYS,
        is_leader=lambda: cluster.leader,
        clock=clock,
    )
    task = asyncio.ensure_future(recorder.run())
    try:
        yield recorder
    finally:
        await cancel_and_wait(task)
