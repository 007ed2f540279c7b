"""The worker service's load feed on a fake clock: a report at once, a beat while nothing
changes, a prompt report after a change with bursts coalesced, and an end at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.clock import FakeClock
from workers.metrics import WorkerMetrics
from workers.registry import ModelRegistry
from workers.service import COALESCE_SECONDS, Load, WorkerService

START = 1000.0


class Feed:
    """One subscriber: each report with the (fake) time it arrived."""

    def __init__(self, service: WorkerService, clock: FakeClock, interval: float | None) -> None:
        self.reports: list[tuple[float, Load]] = []
        self._clock = clock
        self.task = asyncio.create_task(self._follow(service, interval))

    async def _follow(self, service: WorkerService, interval: float | None) -> None:
        async for load in service.load_feed(interval):
            self.reports.append((self._clock.now(), load))

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.reports]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def service(clock: FakeClock) -> AsyncIterator[WorkerService]:
    service = WorkerService(ModelRegistry([], WorkerMetrics()), WorkerMetrics(), {}, clock=clock)
    yield service
    await service.drain(0)  # ends the feeds a test left open ...
    await advance(clock, COALESCE_SECONDS)  # ... once their pause is over
    assert service.load_feeds == 0


async def settle() -> None:
    """Lets every ready task run (the feed's chain of wake-ups) before the test looks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float) -> None:
    await clock.advance(seconds)
    await settle()


async def follow(service: WorkerService, clock: FakeClock, interval: float | None) -> Feed:
    feed = Feed(service, clock, interval)
    await settle()
    return feed


async def test_a_report_at_once_then_one_per_interval_while_nothing_changes(
    service: WorkerService, clock: FakeClock
) -> None:
    feed = await follow(service, clock, 0.5)
    assert feed.times == [START]
    await advance(clock, 0.25)
    assert feed.times == [START]
    await advance(clock, 0.25)
    assert feed.times == [START, START + 0.5]
    await advance(clock, 0.5)
    assert feed.times == [START, START + 0.5, START + 1.0]


async def test_without_an_interval_the_beat_is_one_second(
    service: WorkerService, clock: FakeClock
) -> None:
    feed = await follow(service, clock, None)
    await advance(clock, 0.5)
    assert feed.times == [START]
    await advance(clock, 0.5)
    assert feed.times == [START, START + 1.0]


async def test_the_beat_is_never_tighter_than_50_ms(
    service: WorkerService, clock: FakeClock
) -> None:
    feed = await follow(service, clock, 0.001)
    await advance(clock, 0.025)
    assert feed.times == [START]
    await advance(clock, 0.025)
    for _ in range(3):
        await advance(clock, 0.05)
    assert feed.times == pytest.approx([START + 0.05 * i for i in range(5)])


async def test_a_change_is_reported_after_the_coalescing_pause_and_a_burst_once(
    service: WorkerService, clock: FakeClock
) -> None:
    feed = await follow(service, clock, 10.0)
    service.set_draining(True)
    await advance(clock, COALESCE_SECONDS / 2)
    assert len(feed.reports) == 1  # not sooner than COALESCE_SECONDS after the last report
    await advance(clock, COALESCE_SECONDS)
    assert feed.times == pytest.approx([START, START + COALESCE_SECONDS])
    assert [load.draining for _, load in feed.reports] == [False, True]

    service.set_draining(False)  # a burst of changes inside one pause ...
    for _ in range(50):
        service.load_changed.fire()
    await advance(clock, COALESCE_SECONDS)
    await advance(clock, 1.0)  # ... and nothing after it until the beat, 10 s away ...
    assert len(feed.reports) == 3  # ... is one report
    assert feed.reports[-1][1].draining is False


async def test_shutdown_ends_every_feed(service: WorkerService, clock: FakeClock) -> None:
    feeds = [await follow(service, clock, 10.0) for _ in range(3)]
    assert service.load_feeds == 3
    assert await service.drain(1.0) is True  # nothing in flight: at once
    await advance(clock, COALESCE_SECONDS)  # the feeds' pause after the drain woke them
    assert all(feed.task.done() and feed.task.exception() is None for feed in feeds)
    assert service.load_feeds == 0
