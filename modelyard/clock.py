"""The one clock: monotonic `now()` and `sleep()`, passed to everything that reads time or
waits (the batcher, the balancer, the graph engine and its deadlines, the routed client,
the worker service, the work queue, lease sessions), so tests drive time with a fake one
(`tests.support.clock.FakeClock`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


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
