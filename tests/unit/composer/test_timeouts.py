"""Timeouts on the injected clock (composer.timeouts): they pass with the clock, not the
event loop, and leave no task behind."""

from __future__ import annotations

import asyncio

import pytest

from composer.timeouts import timeout_on
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


async def wait_within(clock: FakeClock, seconds: float | None, body_done: asyncio.Event) -> bool:
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
    waiting = asyncio.create_task(wait_within(clock, 3600, asyncio.Event()))
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
    waiting = asyncio.create_task(wait_within(clock, 5, done))
    await until_sleeping(clock)  # the timeout's watch
    await clock.advance(4)
    done.set()
    assert await waiting is False
    assert clock.sleepers == 0
    assert only_this_task_left()


async def test_no_seconds_is_no_timeout() -> None:
    clock = FakeClock()
    done = asyncio.Event()
    waiting = asyncio.create_task(wait_within(clock, None, done))
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
    waiting = asyncio.create_task(wait_within(clock, 5, asyncio.Event()))
    await until_sleeping(clock)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert only_this_task_left()
