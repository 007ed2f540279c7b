"""modelyard.v1.WorkerLoad/WatchLoad on a real worker: a report at once, prompt reports as
in-flight work rises and falls, a steady beat when idle, and clean ends.

How the feed paces and coalesces its reports is pinned on a fake clock in
tests/unit/workers/test_load_feed.py; here the beats run on a fake clock too, so what is
asserted over the wire holds however slow the host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration

from modelyard.client import AsyncClient
from modelyard.times import duration
from modelyard.v1 import load_pb2, load_pb2_grpc
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.clock import FakeClock
from tests.support.models import Gate
from workers.server import Worker
from workers.settings import WorkerSettings

ECHO: dict[str, Any] = {"name": "echo", "class": "tests.support.models:Echo"}
#: Far longer than any test: a report that comes sooner is due to a change, not the beat.
NO_BEAT = duration(600)


def served_models(answer: Gate) -> list[dict[str, Any]]:
    """A model whose calls wait for `answer` to open and then take 300 ms, and Echo."""
    slow = {
        "name": "slow",
        "class": "tests.support.models:Gated",
        "batching": {"max_batch_size": 8, "max_wait_ms": 5},
        "options": {"predict_gate": str(answer), "delay_ms": 300},
    }
    return [slow, ECHO]


@pytest.fixture
def answer(tmp_path: Path) -> Gate:
    return Gate(tmp_path / "answer")


@pytest_asyncio.fixture
async def worker(answer: Gate) -> AsyncIterator[Worker]:
    async with running_worker(served_models(answer)) as started:
        try:
            yield started
        finally:  # a failed test must not leave calls held while the worker stops
            answer.open()


@contextlib.asynccontextmanager
async def worker_on(clock: FakeClock) -> AsyncIterator[Worker]:
    """A worker whose load feeds beat on `clock` (serving Echo only: a batching model
    would wait on that clock too)."""
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=[ECHO]), clock=clock)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


class Feed:
    """One WatchLoad stream and the reports it has received."""

    def __init__(self, address: str, interval: Duration | None) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        stub = load_pb2_grpc.WorkerLoadStub(self.channel)
        self.call = stub.WatchLoad(load_pb2.WatchLoadRequest(interval=interval))
        self.reports: list[load_pb2.WatchLoadResponse] = []
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for report in self.call:
            self.reports.append(report)

    @property
    def last(self) -> load_pb2.WatchLoadResponse:
        return self.reports[-1]

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def test_reports_follow_in_flight_work_up_and_down(worker: Worker, answer: Gate) -> None:
    feed = Feed(worker.address, NO_BEAT)
    await eventually(lambda: len(feed.reports) == 1)
    first = feed.reports[0]
    assert first.worker_id == worker.worker_id
    assert (first.in_flight, first.queue_depth, first.draining) == (0, 0, False)
    assert dict(first.model_in_flight) == {"slow": 0, "echo": 0}

    async with AsyncClient(worker.address, timeout=60) as calls:
        slow = [asyncio.create_task(calls.predict("slow", x=i)) for i in range(6)]
        # the calls wait at the gate: the report of all six comes while they are in flight
        await eventually(lambda: feed.last.in_flight == 6)
        assert dict(feed.last.model_in_flight) == {"slow": 6, "echo": 0}
        answer.open()
        await asyncio.gather(*slow)
        await eventually(lambda: feed.last.in_flight == 0)
    assert feed.last.latency.ToTimedelta() >= timedelta(milliseconds=250)  # ~300 ms calls
    await feed.close()


async def no_beat_yet(worker: Worker, feed: Feed) -> None:
    """Shows that the feed has sent no beat since its last report: drains the worker (a
    change, reported at once) and checks that the next report is that change."""
    seen = len(feed.reports)
    worker.service.set_draining(True)
    await eventually(lambda: len(feed.reports) > seen)
    assert feed.reports[seen].draining, "a beat came before the change"


async def advance(clock: FakeClock, seconds: float) -> None:
    """Moves the worker's clock on once its feed waits for the next beat."""
    await eventually(lambda: clock.sleepers == 1)
    await clock.advance(seconds)


async def test_an_idle_feed_beats_at_its_interval_clamped_to_50_ms() -> None:
    clock = FakeClock()
    async with worker_on(clock) as worker:
        feed = Feed(worker.address, duration(0.001))  # asks for 1 ms: gets 50 ms
        await eventually(lambda: len(feed.reports) == 1)
        await advance(clock, 0.049)
        await no_beat_yet(worker, feed)
        for _ in range(5):  # then one beat every 50 ms (on the worker's clock)
            seen = len(feed.reports)
            await advance(clock, 0.05)
            await eventually(lambda: len(feed.reports) == seen + 1)  # noqa: B023 (awaited here)
        await feed.close()


async def test_draining_shows_in_the_feed(worker: Worker) -> None:
    feed = Feed(worker.address, NO_BEAT)
    await eventually(lambda: len(feed.reports) == 1)
    worker.service.set_draining(True)
    await eventually(lambda: feed.last.draining)
    worker.service.set_draining(False)
    await eventually(lambda: not feed.last.draining)
    await feed.close()


async def test_a_client_that_goes_away_ends_its_feed_on_the_worker(worker: Worker) -> None:
    feeds = [Feed(worker.address, duration(0.05)) for _ in range(3)]
    await eventually(lambda: worker.service.load_feeds == 3)
    for feed in feeds:
        await feed.close()
    await eventually(lambda: worker.service.load_feeds == 0)


async def test_shutdown_ends_open_feeds_without_an_error(answer: Gate) -> None:
    async with running_worker(served_models(answer)) as worker:
        feed = Feed(worker.address, NO_BEAT)
        await eventually(lambda: len(feed.reports) == 1)
        async with asyncio.timeout(5):
            await worker.stop()
        await asyncio.wait_for(feed.task, 5)  # ended by the worker, not cancelled ...
        assert await feed.call.code() == grpc.StatusCode.OK  # ... and with OK
        await feed.channel.close()


@pytest.mark.parametrize(
    "interval", [None, duration(0), duration(-5)], ids=["missing", "zero", "negative"]
)
async def test_a_missing_zero_or_negative_interval_means_the_default_second(
    interval: Duration | None,
) -> None:
    clock = FakeClock()
    async with worker_on(clock) as worker:
        feed = Feed(worker.address, interval)
        await eventually(lambda: len(feed.reports) == 1)
        await advance(clock, 0.999)
        await no_beat_yet(worker, feed)
        seen = len(feed.reports)
        await advance(clock, 1.0)
        await eventually(lambda: len(feed.reports) == seen + 1)
        await feed.close()
