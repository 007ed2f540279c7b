"""The one clock: monotonic `now()` and `sleep()`, passed to everything that reads time or
waits (the batcher, the balancer, the graph engine and its deadlines, the routed client,
the worker service, the work queue, lease sessions), so tests drive time with a fake one
(`tests.support.clock.FakeClock`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Returns once `seconds` have passed on this clock."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The default everywhere a clock is optional; stateless, so one is enough.
SYSTEM_CLOCK: Clock = MonotonicClock()


class ClockTimeout:
    """The scope `timeout_on` yields: asyncio's own `Timeout` underneath, its due time on
    a `Clock`."""

    def __init__(self, clock: Clock, seconds: float | None, scope: asyncio.Timeout) -> None:
        self._clock = clock
        self._seconds = seconds
        self._scope = scope
        self.due = None if seconds is None else clock.now() + seconds

    def restart(self) -> None:
        """Due `seconds` from now again (an idle timer that activity keeps resetting)."""
        if self._seconds is not None:
            self.due = self._clock.now() + self._seconds

    def expired(self) -> bool:
        """Whether this timeout fired (not a TimeoutError raised from inside the body)."""
        return self._scope.expired()


@asynccontextmanager
async def timeout_on(clock: Clock, seconds: float | None) -> AsyncIterator[ClockTimeout]:
    """`asyncio.timeout` with `seconds` (None: never) measured on `clock` instead of the
    loop's time, so a FakeClock moves it:

        async with timeout_on(clock, 5.0) as scope:
            await work()    # cancelled once 5 s pass on `clock`: TimeoutError
    """
    async with asyncio.timeout(None) as scope:
        timeout = ClockTimeout(clock, seconds, scope)
        if seconds is None:
            yield timeout
            return
        watchdog = asyncio.create_task(_expire(clock, timeout, scope), name="timeout")
        try:
            yield timeout
        finally:
            if not watchdog.done():
                watchdog.cancel()
                await asyncio.wait({watchdog})  # no task outlives the scope


async def _expire(clock: Clock, timeout: ClockTimeout, scope: asyncio.Timeout) -> None:
    # restart() only moves the due time: the watchdog finds out when it wakes, sleeps on
    while timeout.due is not None and (left := timeout.due - clock.now()) > 0:
        await clock.sleep(left)
    # due now: asyncio cancels the scope's task on its next turn, as for a loop-clock timeout
    scope.reschedule(asyncio.get_running_loop().time())


async def wait_within(clock: Clock, seconds: float, waiting: Awaitable[T]) -> T:
    """Awaits `waiting` for at most `seconds` on `clock`; TimeoutError after that."""
    async with timeout_on(clock, seconds):
        return await waiting
