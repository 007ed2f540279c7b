"""The dynamic batcher, driven by a fake clock: no real waiting, exact timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelyard.errors import ResourceExhausted
from tests.support.clock import FakeClock
from workers.batching import Batcher, Pending


async def settle() -> None:
    """Lets every ready task run until the loop is quiet."""
    for _ in range(20):
        await asyncio.sleep(0)


class Recorder:
    """A run_batch that records batch sizes and answers each item with item * 10."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, batch: list[Pending[int]]) -> None:
        self.batches.append([p.item for p in batch])
        if self.gate is not None:
            await self.gate.wait()
        for pending in batch:
            pending.future.set_result(pending.item * 10)


def make(recorder: Recorder, clock: FakeClock, **kw: Any) -> Batcher[int]:
    options: dict[str, Any] = {"max_batch_size": 4, "max_wait": 1.0, "max_queue_size": 100}
    options.update(kw)
    batcher = Batcher(recorder, clock=clock, name="m", **options)
    batcher.start()
    return batcher


async def test_a_full_batch_runs_at_once_without_waiting() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    futures = [batcher.submit(i) for i in range(4)]
    await settle()
    assert recorder.batches == [[0, 1, 2, 3]]
    assert [await f for f in futures] == [0, 10, 20, 30]
    await batcher.stop()


async def test_a_partial_batch_waits_max_wait_from_its_first_request() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    first = batcher.submit(1)
    # binary fractions, so the fake times add up exactly
    await clock.advance(0.5)
    second = batcher.submit(2)
    await clock.advance(0.25)
    assert recorder.batches == []  # 0.75 s after the first request: still gathering
    await clock.advance(0.25)
    assert recorder.batches == [[1, 2]]
    assert (await first, await second) == (10, 20)
    await batcher.stop()


async def test_requests_that_queued_behind_a_running_batch_do_not_wait_again() -> None:
    clock, recorder = FakeClock(), Recorder()
    recorder.gate = asyncio.Event()
    batcher = make(recorder, clock)
    for i in range(4):
        batcher.submit(i)
    await settle()
    late = [batcher.submit(i) for i in (4, 5)]
    await clock.advance(2.0)  # the running batch holds; the late ones are already overdue
    recorder.gate.set()
    await settle()
    assert recorder.batches == [[0, 1, 2, 3], [4, 5]]
    assert [await f for f in late] == [40, 50]
    await batcher.stop()


async def test_a_full_queue_refuses_with_resource_exhausted() -> None:
    clock, recorder = FakeClock(), Recorder()
    recorder.gate = asyncio.Event()
    batcher = make(recorder, clock, max_batch_size=2, max_queue_size=3)
    batcher.submit(0)
    batcher.submit(1)
    await settle()  # 0 and 1 are running; the queue is empty again
    for i in range(3):
        batcher.submit(10 + i)
    with pytest.raises(ResourceExhausted, match="queue limit"):
        batcher.submit(99)
    recorder.gate.set()
    await clock.advance(1.0)
    await clock.advance(1.0)
    assert recorder.batches == [[0, 1], [10, 11], [12]]
    await batcher.stop()


async def test_cancelled_requests_are_left_out_of_their_batch() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    keep = batcher.submit(1)
    gone = batcher.submit(2)
    gone.cancel()
    await clock.advance(1.0)
    assert recorder.batches == [[1]]
    assert await keep == 10
    await batcher.stop()


async def test_stop_cancels_what_still_waits() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    waiting = batcher.submit(1)
    await batcher.stop()
    assert waiting.cancelled()


async def test_cancelled_requests_free_their_queue_places_at_once() -> None:
    clock, recorder = FakeClock(), Recorder()
    recorder.gate = asyncio.Event()
    batcher = make(recorder, clock, max_batch_size=2, max_queue_size=3)
    batcher.submit(0)
    batcher.submit(1)
    await settle()  # 0 and 1 hold the model; what comes next has to queue
    gone = [batcher.submit(10 + i) for i in range(3)]
    assert batcher.depth == 3
    for future in gone:
        future.cancel()
    await settle()  # the done-callbacks run; the batch loop is still held by the gate
    assert batcher.depth == 0  # reported load: nobody is waiting any more
    kept = [batcher.submit(20 + i) for i in range(3)]  # the places are free again
    with pytest.raises(ResourceExhausted, match="3 requests waiting"):
        batcher.submit(99)
    recorder.gate.set()
    await clock.advance(1.0)
    await clock.advance(1.0)
    assert recorder.batches == [[0, 1], [20, 21], [22]]
    assert [await f for f in kept] == [200, 210, 220]
    assert batcher.depth == 0
    await batcher.stop()


async def test_given_up_entries_do_not_pile_up_while_a_batch_runs() -> None:
    clock, recorder = FakeClock(), Recorder()
    recorder.gate = asyncio.Event()
    batcher = make(recorder, clock, max_batch_size=1, max_queue_size=3)
    batcher.submit(0)
    await settle()
    for i in range(100):  # a client that submits and cancels while the model is busy
        batcher.submit(i).cancel()
        await settle()
    assert batcher.depth == 0
    assert len(batcher._queue) <= 2 * 3  # compacted, not 100 dead entries
    recorder.gate.set()
    await batcher.stop()
