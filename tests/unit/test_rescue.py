"""Abandoning unanswered attempts (modelyard.rescue) on a fake clock: when a derived attempt
timeout exists and how long it is, and what a guarded wait raises when its replica is
abandoned, when its replica stays silent for the timeout, and when its caller cancels it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelyard.rescue import Abandoned, AttemptTimeouts, LatencyWindow, Rescues
from tests.support.clock import FakeClock


def window_of(clock: FakeClock, latencies: list[float]) -> LatencyWindow:
    window = LatencyWindow(clock)
    for seconds in latencies:
        window.record(seconds)
    return window


def test_no_timeout_is_derived_before_enough_answers_are_known() -> None:
    clock = FakeClock()
    policy = AttemptTimeouts(min_samples=20)
    assert policy.derive(window_of(clock, [0.5] * 19)) is None
    assert policy.derive(window_of(clock, [0.5] * 20)) == pytest.approx(2.0)


def test_the_timeout_is_a_multiple_of_the_high_percentile_with_a_floor() -> None:
    clock = FakeClock()
    policy = AttemptTimeouts(factor=4.0, quantile=0.99, floor_s=1.0, min_samples=20)
    # 200 answers: 198 fast ones and two slow ones; the p99 (nearest rank 198) is fast
    latencies = [0.3] * 198 + [5.0, 6.0]
    assert policy.derive(window_of(clock, latencies)) == pytest.approx(1.2)
    # with fewer than 100 answers the p99 is the slowest one
    assert policy.derive(window_of(clock, [0.3] * 49 + [0.9])) == pytest.approx(3.6)
    # a fast model still gets the floor: scheduling noise is not a hang
    assert policy.derive(window_of(clock, [0.002] * 50)) == 1.0


async def test_old_answers_stop_counting() -> None:
    clock = FakeClock()
    policy = AttemptTimeouts(min_samples=3, max_age_s=60.0, floor_s=0.0, factor=1.0)
    window = window_of(clock, [9.0, 9.0, 9.0])
    await clock.advance(30)
    for _ in range(3):
        window.record(0.5)
    assert policy.derive(window) == 9.0  # all six are recent
    await clock.advance(31)
    assert policy.derive(window) == 0.5  # the 9 s answers are over a minute old
    await clock.advance(30)
    assert policy.derive(window) is None  # nothing recent: no basis for a timeout


def test_the_window_keeps_only_the_latest_answers() -> None:
    window = window_of(FakeClock(), [float(i) for i in range(10)])
    small = LatencyWindow(FakeClock(), size=3)
    for i in range(10):
        small.record(float(i))
    assert window.recent(60.0) == [float(i) for i in range(10)]
    assert small.recent(60.0) == [7.0, 8.0, 9.0]


async def test_the_sorted_view_is_renewed_by_time_or_by_a_sixteenth_of_new_answers() -> None:
    clock = FakeClock()
    window = window_of(clock, [1.0] * 160)
    assert window.recent(60.0)[-1] == 1.0
    for _ in range(10):  # 160 // 16: not more than a sixteenth yet
        window.record(9.0)
    assert window.recent(60.0)[-1] == 1.0
    window.record(9.0)
    assert window.recent(60.0)[-10:] == [9.0] * 10  # 11 new ones: sorted again
    window.record(5.0)
    await clock.advance(LatencyWindow.REFRESH_S)
    assert 5.0 in window.recent(60.0)  # one new answer, but the view had grown old


async def test_abandoning_a_replica_ends_its_unanswered_attempts_and_no_others() -> None:
    rescues = Rescues(FakeClock())
    never = asyncio.Event()
    outcomes: dict[str, BaseException | None] = {}

    async def attempt(name: str, worker_id: str) -> None:
        try:
            async with rescues.guard(worker_id, None):
                await never.wait()
        except BaseException as error:
            outcomes[name] = error
            raise

    tasks = [
        asyncio.create_task(attempt(name, worker))
        for name, worker in (("a1", "a"), ("a2", "a"), ("b1", "b"))
    ]
    await asyncio.sleep(0)
    assert rescues.abandon("a", "left the endpoint set") == 2
    _, pending = await asyncio.wait(tasks, timeout=5)
    assert {t.get_name() for t in pending} == {tasks[2].get_name()}
    for name in ("a1", "a2"):
        error = outcomes[name]
        assert isinstance(error, Abandoned) and error.message == "left the endpoint set"
        assert not error.silent
    assert rescues.abandon("a", "again") == 0  # they are no longer in flight
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes["b1"], asyncio.CancelledError)  # the caller's own: as is


async def test_an_attempt_unanswered_for_its_timeout_is_abandoned_on_the_clock() -> None:
    clock = FakeClock()
    rescues = Rescues(clock)

    async def attempt() -> None:
        async with rescues.guard("a", 2.0):
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)  # the attempt starts: its 2 s count from now
    await clock.advance(1.9)
    assert not task.done()
    await clock.advance(0.1)
    await asyncio.wait({task}, timeout=5)
    error = task.exception()
    assert isinstance(error, Abandoned) and error.silent
    assert error.message == "nothing heard from the replica for 2s"


async def test_an_answer_from_the_replica_starts_the_silence_over() -> None:
    clock = FakeClock()
    rescues = Rescues(clock)

    async def attempt() -> None:
        async with rescues.guard("a", 2.0):
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    for _ in range(3):  # the replica answers other calls: slow here, but alive
        await clock.advance(1.5)
        rescues.heard_from("a")
        rescues.heard_from("b")  # news of another replica changes nothing
    assert not task.done()
    await clock.advance(1.9)
    assert not task.done()
    await clock.advance(0.1)  # 2 s without a word from "a"
    await asyncio.wait({task}, timeout=5)
    assert isinstance(task.exception(), Abandoned)


async def test_an_answer_in_time_passes_through_and_leaves_nothing_behind() -> None:
    clock = FakeClock()
    rescues = Rescues(clock)
    async with rescues.guard("a", 2.0):
        await clock.sleep(0)
    assert rescues.abandon("a", "late") == 0
    await clock.advance(2.0)  # the watchdog wakes when the attempt would have been due
    await asyncio.sleep(0)
    assert clock.sleepers == 0  # and, with no attempt left, it is gone
    with pytest.raises(ValueError, match="the model said no"):
        async with rescues.guard("a", 2.0):
            raise ValueError("the model said no")  # not ours to rename


async def test_what_a_cancelled_call_raises_instead_still_reads_as_abandoned() -> None:
    # an interceptor may turn the cancellation into an error of its own (a CANCELLED
    # AioRpcError): once the replica was abandoned, the attempt was abandoned
    rescues = Rescues(FakeClock())

    async def attempt() -> None:
        async with rescues.guard("a", None):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise RuntimeError("CANCELLED") from None

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    rescues.abandon("a", "left the endpoint set")
    await asyncio.wait({task}, timeout=5)
    assert isinstance(task.exception(), Abandoned)


async def test_one_watchdog_serves_every_attempt_and_wakes_for_the_earliest() -> None:
    clock = FakeClock()
    rescues = Rescues(clock)

    async def attempt(timeout: float) -> None:
        async with rescues.guard("a", timeout):
            await asyncio.Event().wait()

    slow = [asyncio.create_task(attempt(5.0)) for _ in range(4)]
    await asyncio.sleep(0)
    await clock.advance(0)  # the watchdog starts
    assert clock.sleepers == 1  # one sleep for four attempts, not four
    quick = asyncio.create_task(attempt(1.0))  # due before the watchdog meant to wake
    await asyncio.sleep(0)
    await clock.advance(1.0)
    await asyncio.wait({quick}, timeout=5)
    assert isinstance(quick.exception(), Abandoned)
    assert not any(task.done() for task in slow)
    await clock.advance(4.0)
    await asyncio.wait(slow, timeout=5)
    assert all(isinstance(task.exception(), Abandoned) for task in slow)
    assert clock.sleepers == 0  # no attempt left: no watchdog


async def test_closing_stops_the_watchdog() -> None:
    clock = FakeClock()
    rescues = Rescues(clock)

    async def attempt() -> None:
        async with rescues.guard("a", 5.0):
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    await clock.advance(0)
    assert clock.sleepers == 1
    rescues.close()
    await asyncio.sleep(0)
    assert clock.sleepers == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_attempts_one_after_another_share_one_watchdog() -> None:
    # a client making one call at a time must not start and cancel a task per attempt
    clock = FakeClock()
    rescues = Rescues(clock)
    loop = asyncio.get_running_loop()
    started: list[asyncio.Task[Any]] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        started.append(task)  # named by create_task once this returns
        return task

    loop.set_task_factory(counting)
    try:
        for _ in range(20):
            async with rescues.guard("a", 2.0):
                await clock.sleep(0)
            await clock.advance(0.01)
    finally:
        loop.set_task_factory(None)
    assert [task.get_name() for task in started].count("rescue watchdog") == 1
    rescues.close()
