"""The dynamic batcher, driven by a fake clock: no real waiting, exact timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelyard.errors import ResourceExhausted
from modelyard.model import Model, Outputs, Request
from tests.support.clock import FakeClock
from workers.batching import Batcher, Pending, similar_lengths
from workers.metrics import WorkerMetrics
from workers.runner import ModelRunner, text_length
from workers.settings import BatchingConfig


async def settle() -> None:
    """Lets every ready task run until the loop is quiet."""
    for _ in range(20):
        await asyncio.sleep(0)


class Recorder:
    """A run_batch that records batch sizes and answers each item with item * 10.

    With a `gate`, each batch waits for it: the model is busy until the test sets it.
    """

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


async def busy(batcher: Batcher[int], recorder: Recorder) -> None:
    """Makes the model busy: a lone request runs and holds it until the gate is set."""
    recorder.gate = asyncio.Event()
    batcher.submit(0)
    await settle()
    assert recorder.batches == [[0]]


async def test_an_idle_model_runs_a_lone_request_at_once() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    started = clock.now()
    lone = batcher.submit(7)
    await settle()
    assert recorder.batches == [[7]]
    assert clock.sleepers == 0  # nothing waited for company
    assert await lone == 70
    assert clock.now() == started
    await batcher.stop()


async def test_an_idle_model_takes_everything_that_arrived_in_the_same_turn() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    futures = [batcher.submit(i) for i in range(6)]
    await settle()
    # at once, max_batch_size at a time: the first four, then the two left
    assert recorder.batches[0] == [0, 1, 2, 3]
    assert [await f for f in futures[:4]] == [0, 10, 20, 30]
    await clock.advance(1.0)
    assert recorder.batches == [[0, 1, 2, 3], [4, 5]]
    await batcher.stop()


async def test_requests_arriving_while_a_batch_runs_gather_into_the_next_one() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    await busy(batcher, recorder)
    waiting = [batcher.submit(i) for i in range(1, 7)]
    await settle()
    assert recorder.batches == [[0]]  # none of them reaches the busy model
    assert recorder.gate is not None
    recorder.gate.set()
    await settle()
    # a full batch goes as soon as the model is free; the two left wait for company
    assert recorder.batches == [[0], [1, 2, 3, 4]]
    assert clock.sleepers == 1
    await clock.advance(1.0)
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert [await f for f in waiting] == [10, 20, 30, 40, 50, 60]
    await batcher.stop()


async def test_max_wait_caps_the_wait_for_company_behind_a_busy_model() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    await busy(batcher, recorder)
    first = batcher.submit(1)
    # binary fractions, so the fake times add up exactly
    await clock.advance(0.5)
    second = batcher.submit(2)
    assert recorder.gate is not None
    recorder.gate.set()
    await settle()
    assert recorder.batches == [[0]]  # the model is free; 1 has waited 0.5 of its 1.0
    await clock.advance(0.25)
    assert recorder.batches == [[0]]
    await clock.advance(0.25)
    assert recorder.batches == [[0], [1, 2]]
    assert (await first, await second) == (10, 20)
    await batcher.stop()


async def test_requests_that_queued_behind_a_running_batch_do_not_wait_again() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    await busy(batcher, recorder)
    late = [batcher.submit(i) for i in (4, 5)]
    await clock.advance(2.0)  # the running batch holds; the late ones are already overdue
    assert recorder.gate is not None
    recorder.gate.set()
    await settle()
    assert recorder.batches == [[0], [4, 5]]
    assert clock.sleepers == 0
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
    await settle()
    assert recorder.batches == [[1]]
    assert await keep == 10
    await batcher.stop()


async def test_cancelled_requests_behind_a_busy_model_are_dropped() -> None:
    clock, recorder = FakeClock(), Recorder()
    batcher = make(recorder, clock)
    await busy(batcher, recorder)
    oldest = batcher.submit(1)
    await clock.advance(0.5)
    kept = batcher.submit(2)
    oldest.cancel()
    assert recorder.gate is not None
    recorder.gate.set()
    await clock.advance(0.5)
    # the wait counts from the oldest request still waiting: 2 arrived 0.5 s ago
    assert recorder.batches == [[0]]
    await clock.advance(0.5)
    assert recorder.batches == [[0], [2]]
    assert await kept == 20
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


# -- grouping by length ---------------------------------------------------------------


def groups(lengths: list[int]) -> list[list[int]]:
    """similar_lengths over item indices, so a test reads which items went together."""
    return similar_lengths(range(len(lengths)), lengths.__getitem__, spread=2.0, slack=8)


def test_inputs_of_similar_length_stay_one_group_in_their_order() -> None:
    assert groups([40, 52, 45, 79]) == [[0, 1, 2, 3]]


def test_very_different_lengths_split_and_the_oldest_group_goes_first() -> None:
    assert groups([300, 20, 280, 25, 700]) == [[0, 2], [1, 3], [4]]


def test_short_inputs_within_the_slack_stay_together_whatever_their_ratio() -> None:
    assert groups([1, 9, 3]) == [[0, 1, 2]]
    assert groups([1, 10]) == [[0], [1]]


def test_text_length_counts_the_characters_of_every_string() -> None:
    inputs = {"text": "abc", "messages": [{"role": "user", "content": "hello"}], "n": 3}
    assert text_length(inputs) == 3 + 4 + 5


class Texts(Model):
    """Records the texts of each model call and answers with each text's length."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict(self, batch: list[Request]) -> list[Outputs]:
        self.calls.append([r.inputs["text"] for r in batch])
        return [{"n": len(r.inputs["text"])} for r in batch]


@pytest.fixture
async def runner() -> AsyncIterator[ModelRunner]:
    batching = BatchingConfig(max_batch_size=8, max_wait_ms=1000)
    made = ModelRunner("m", batching, threads=1, metrics=WorkerMetrics(), clock=FakeClock())
    yield made
    await made.close()


async def test_a_batch_of_short_and_long_prompts_runs_as_one_call_per_length(
    runner: ModelRunner,
) -> None:
    model = Texts()
    runner.attach(model)
    texts = ["short", "L" * 300, "tiny", "M" * 290]
    results = await asyncio.gather(*(runner.predict(Request({"text": t}, {})) for t in texts))
    assert results == [{"n": len(t)} for t in texts]
    # one batch (an idle model takes all four at once), two model calls
    assert model.calls == [["short", "tiny"], ["L" * 300, "M" * 290]]
