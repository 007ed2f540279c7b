"""Timeouts on the injected clock (modelyard.clock.timeout_on): they pass with the clock, not the
event loop, and leave no task behind."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.clock import timeout_on, wait_within
from tests.support.clock import FakeClock


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


async def until_sleeping(clock: FakeClock) -> None:
    """Lets the loop turn until something sleeps on `clock` (bounded turns, no time)."""
    for _ in range(100):
        if clock.sleepers:
            return
        await asyncio.sleep(0)
    raise AssertionError("nothing ever slept on the clock")


async def expired_within(clock: FakeClock, seconds: float | None, body_done: asyncio.Event) -> bool:
    """Waits for `body_done` under timeout_on; whether the scope expired."""
    try:
        async with timeout_on(clock, seconds) as scope:
            await body_done.wait()
    except TimeoutError:
        assert scope.expired()
        return True
    assert not scope.expired()
    return False


async def test_it_expires_when_the_injected_clock_passes_it() -> None:
    clock = FakeClock()
    # an hour: on the loop's clock this would outlast the test
    waiting = asyncio.create_task(expired_within(clock, 3600, asyncio.Event()))
    await until_sleeping(clock)
    await clock.advance(3599)
    assert not waiting.done()
    await clock.advance(1)
    assert await waiting is True
    assert only_this_task_left()


async def test_the_time_counts_from_entering_the_scope() -> None:
    clock = FakeClock()

    async def advance_at_once() -> None:
        async with timeout_on(clock, 5):
            await clock.advance(5)  # before the timeout's watch has had a turn
            for _ in range(100):
                await asyncio.sleep(0)
            pytest.fail("the timeout did not expire")

    with pytest.raises(TimeoutError):
        await advance_at_once()
    assert only_this_task_left()


async def test_a_body_that_finishes_in_time_leaves_nothing_waiting() -> None:
    clock = FakeClock()
    done = asyncio.Event()
    waiting = asyncio.create_task(expired_within(clock, 5, done))
    await until_sleeping(clock)  # the timeout's watch
    await clock.advance(4)
    done.set()
    assert await waiting is False
    assert clock.sleepers == 0
    assert only_this_task_left()


async def test_no_seconds_is_no_timeout() -> None:
    clock = FakeClock()
    done = asyncio.Event()
    waiting = asyncio.create_task(expired_within(clock, None, done))
    await clock.advance(10**6)
    assert clock.sleepers == 0 and not waiting.done()
    done.set()
    assert await waiting is False


async def test_errors_of_the_body_and_cancellation_pass_through() -> None:
    clock = FakeClock()
    with pytest.raises(TimeoutError):  # the body's own: the scope did not expire
        async with timeout_on(clock, 5) as scope:
            raise TimeoutError
    assert not scope.expired()
    waiting = asyncio.create_task(expired_within(clock, 5, asyncio.Event()))
    await until_sleeping(clock)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert only_this_task_left()


async def test_restart_moves_an_idle_timeout_on() -> None:
    clock = FakeClock()
    expired = asyncio.Event()

    async def idle_watch() -> None:
        try:
            async with timeout_on(clock, 5) as idle:
                await clock.sleep(4)
                idle.restart()  # activity at 4 s: now due at 9 s, not 5 s
                await asyncio.Event().wait()
        except TimeoutError:
            expired.set()

    watching = asyncio.create_task(idle_watch())
    await clock.advance(0)  # the task enters the timeout at the clock's start
    await clock.advance(4)
    await clock.advance(4.5)  # 8.5 s: past the first due time, short of the restarted one
    assert not expired.is_set()
    await clock.advance(1)
    await asyncio.wait_for(watching, 10)
    assert expired.is_set()


async def test_wait_within_returns_the_result_or_times_out_on_the_clock() -> None:
    clock = FakeClock()
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("ready")
    assert await wait_within(clock, 1, done) == "ready"
    waiting = asyncio.create_task(wait_within(clock, 1, asyncio.Event().wait()))
    await clock.advance(0)
    await clock.advance(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 10)
