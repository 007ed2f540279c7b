"""The work queue on a fake clock: each key queued once, a key that changes while it is
being reconciled goes round once more, and failures come back after a growing backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.workqueue import WorkQueue, run_controller
from modelyard.backoff import Backoff
from modelyard_server.aio import cancel_and_wait
from tests.support.clock import FakeClock
from tests.unit.controlplane.fakes import settle

EXACT = Backoff(initial=1.0, cap=4.0, jitter=0.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(clock: FakeClock) -> AsyncIterator[WorkQueue]:
    queue = WorkQueue(clock=clock, backoff=EXACT)
    yield queue
    await queue.close()


async def test_a_key_queued_twice_is_processed_once(queue: WorkQueue) -> None:
    queue.add("a")
    queue.add("a")
    queue.add("b")

    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    queue.add("c")
    assert await queue.get() == "c"  # no second "a" was waiting in between


async def test_a_key_that_changes_while_processed_goes_round_once_more(
    queue: WorkQueue,
) -> None:
    queue.add("a")
    assert await queue.get() == "a"

    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # not handed to a second reconcile while the first runs
    queue.done("a")

    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_a_failed_key_comes_back_after_a_backoff_that_doubles_until_forgotten(
    queue: WorkQueue, clock: FakeClock
) -> None:
    queue.add("a")
    assert await queue.get() == "a"

    assert queue.retry_later("a") == 1.0
    queue.done("a")
    await clock.advance(0.99)
    assert len(queue) == 0
    await clock.advance(0.01)
    assert len(queue) == 1

    assert await queue.get() == "a"
    assert queue.retry_later("a") == 2.0
    queue.done("a")
    await clock.advance(1.99)
    assert len(queue) == 0
    await clock.advance(0.01)
    assert len(queue) == 1

    queue.forget("a")  # it reconciled: the next failure starts afresh
    assert queue.retry_later("a") == 1.0


async def test_the_backoff_stops_growing_at_its_cap(queue: WorkQueue) -> None:
    delays = [queue.retry_later("a") for _ in range(5)]

    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]


async def test_closing_drops_the_retries_still_waiting(queue: WorkQueue, clock: FakeClock) -> None:
    queue.retry_later("a")

    await queue.close()
    await clock.advance(10)

    assert len(queue) == 0
    assert clock.sleepers == 0


async def test_the_controller_retries_a_failed_reconcile_and_forgets_it_once_it_worked(
    queue: WorkQueue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes: list[Exception | None] = [ConnectionError("etcd away"), None, TimeoutError()]
    calls: list[str] = []

    async def reconcile(key: str) -> None:
        calls.append(key)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    caplog.set_level(logging.WARNING, "controlplane.workqueue")
    controller = asyncio.ensure_future(run_controller(queue, reconcile))
    try:
        queue.add("w1")
        await settle()
        assert calls == ["w1"]
        assert "reconcile w1 failed (ConnectionError: etcd away); retrying in 1.00 s" in (
            caplog.text
        )

        await clock.advance(1.0)
        assert calls == ["w1", "w1"]  # retried, and this time it worked

        queue.add("w1")
        await settle()
        assert calls == ["w1", "w1", "w1"]
        # forgotten after the success: the backoff starts again at its first delay
        assert "reconcile w1 failed (etcd did not answer in time); retrying in 1.00 s" in (
            caplog.text
        )
    finally:
        await cancel_and_wait(controller)
