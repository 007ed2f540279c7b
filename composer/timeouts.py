"""Timeouts on the injected clock (modelyard.clock.Clock) rather than the event loop's, so
that a run's deadline and its nodes' timeouts pass with the same clock that times the run,
and tests move them with a FakeClock instead of waiting.

    async with timeout_on(clock, 5.0) as scope:
        await work()  # cancelled once 5 s have passed on `clock`: TimeoutError
    ...
    except TimeoutError:
        if scope.expired(): ...  # this timeout, not one raised from inside `work`
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from modelyard.clock import Clock


@asynccontextmanager
async def timeout_on(clock: Clock, seconds: float | None) -> AsyncIterator[asyncio.Timeout]:
    """asyncio.timeout, with `seconds` (None: never) measured on `clock`. The scope is
    asyncio's own, so cancellation and `expired()` behave as they do there."""
    async with asyncio.timeout(None) as scope:
        if seconds is None:
            yield scope
            return
        # due from now, not from when the watchdog first runs
        due = clock.now() + seconds
        watchdog = asyncio.create_task(_expire(clock, due, scope), name="timeout")
        try:
            yield scope
        finally:
            if not watchdog.done():
                watchdog.cancel()
                await asyncio.wait({watchdog})  # no task outlives the scope


async def _expire(clock: Clock, due: float, scope: asyncio.Timeout) -> None:
    await clock.sleep(due - clock.now())
    # due now: asyncio cancels the scope's task on its next turn, as for a loop-clock timeout
    scope.reschedule(asyncio.get_running_loop().time())
