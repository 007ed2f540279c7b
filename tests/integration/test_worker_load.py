"""modelyard.v1.WorkerLoad/WatchLoad on a real worker: a report at once, prompt reports as
in-flight work rises and falls, a steady beat when idle, and clean ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from modelyard.client import AsyncClient
from modelyard.times import duration, seconds
from modelyard.v1 import load_pb2, load_pb2_grpc
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from workers.server import Worker

SLOW: list[dict[str, Any]] = [
    {
        "name": "slow",
        "class": "tests.support.models:SlowEcho",
        "batching": {"max_batch_size": 8, "max_wait_ms": 5},
        "options": {"delay_ms": 300},
    },
    {"name": "echo", "class": "tests.support.models:Echo"},
]


@pytest_asyncio.fixture
async def worker() -> AsyncIterator[Worker]:
    async with running_worker(SLOW) as started:
        yield started


class Feed:
    """One WatchLoad stream, its reports kept with the time they arrived."""

    def __init__(self, address: str, interval_ms: int) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        stub = load_pb2_grpc.WorkerLoadStub(self.channel)
        request = load_pb2.WatchLoadRequest(interval=duration(interval_ms / 1000.0))
        self.call = stub.WatchLoad(request)
        self.reports: list[tuple[float, load_pb2.WatchLoadResponse]] = []
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for report in self.call:
            self.reports.append((time.monotonic(), report))

    def first_time(self, predicate: Any) -> float:
        return next(t for t, r in self.reports if predicate(r))

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def test_reports_follow_in_flight_work_up_and_down(worker: Worker) -> None:
    # a long interval: every report but the first is due to a change
    feed = Feed(worker.address, interval_ms=10_000)
    await eventually(lambda: len(feed.reports) == 1, timeout=1.0)
    first = feed.reports[0][1]
    assert first.worker_id == worker.worker_id
    assert (first.in_flight, first.queue_depth, first.draining) == (0, 0, False)
    assert dict(first.model_in_flight) == {"slow": 0, "echo": 0}

    async with AsyncClient(worker.address, timeout=10) as calls:
        started = time.monotonic()
        slow = [asyncio.create_task(calls.predict("slow", x=i)) for i in range(6)]
        await eventually(lambda: feed.reports[-1][1].in_flight == 6, timeout=0.5)
        peak = feed.reports[-1][1]
        assert dict(peak.model_in_flight) == {"slow": 6, "echo": 0}
        await asyncio.gather(*slow)
        await eventually(lambda: feed.reports[-1][1].in_flight == 0, timeout=0.5)
    assert feed.first_time(lambda r: r.in_flight == 6) - started < 0.2
    last = feed.reports[-1][1]
    assert 0.25 <= seconds(last.latency) < 1.0  # the mean of ~300 ms calls
    # twelve changes in two bursts (six calls in, six out), coalesced into a few reports
    assert len(feed.reports) <= 6, [r.in_flight for _, r in feed.reports]
    await feed.close()


async def test_an_idle_feed_beats_at_its_interval_clamped_to_50_ms(worker: Worker) -> None:
    feed = Feed(worker.address, interval_ms=1)  # asks for too much: gets 50 ms
    await eventually(lambda: len(feed.reports) == 6, timeout=1.0)
    times = [t for t, _ in feed.reports]
    assert times[-1] - times[0] >= 5 * 0.045
    await feed.close()


async def test_draining_shows_in_the_feed(worker: Worker) -> None:
    feed = Feed(worker.address, interval_ms=10_000)
    await eventually(lambda: len(feed.reports) == 1, timeout=1.0)
    worker.service.set_draining(True)
    await eventually(lambda: feed.reports[-1][1].draining, timeout=0.5)
    worker.service.set_draining(False)
    await eventually(lambda: not feed.reports[-1][1].draining, timeout=0.5)
    await feed.close()


async def test_a_client_that_goes_away_ends_its_feed_on_the_worker(worker: Worker) -> None:
    feeds = [Feed(worker.address, interval_ms=50) for _ in range(3)]
    await eventually(lambda: worker.service.load_feeds == 3, timeout=1.0)
    for feed in feeds:
        await feed.close()
    await eventually(lambda: worker.service.load_feeds == 0, timeout=1.0)


async def test_shutdown_ends_open_feeds_without_an_error() -> None:
    async with running_worker(SLOW) as worker:
        feed = Feed(worker.address, interval_ms=10_000)
        await eventually(lambda: len(feed.reports) == 1, timeout=1.0)
        started = time.monotonic()
        await worker.stop()
        assert time.monotonic() - started < 0.5  # not held up by the open stream
        await asyncio.wait_for(feed.task, 1.0)  # ended with OK, not cancelled
        assert await feed.call.code() == grpc.StatusCode.OK
        await feed.channel.close()


@pytest.mark.parametrize("interval_ms", [0, -5])
async def test_a_missing_or_negative_interval_means_the_default(
    worker: Worker, interval_ms: int
) -> None:
    feed = Feed(worker.address, interval_ms=interval_ms)
    await eventually(lambda: len(feed.reports) == 1, timeout=1.0)
    await asyncio.sleep(0.3)
    assert len(feed.reports) == 1  # the next beat is a second away
    await feed.close()
