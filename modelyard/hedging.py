"""Hedged calls, for `modelyard.routed_client`: when a call has no answer after a delay, a
second attempt starts beside it and the first answer wins; the other is cancelled.

A hedge trades load for tail latency: it doubles the work of exactly the calls that were
slow, so it is opt-in per graph node (`hedge_after`) and only for calls a caller may repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from modelyard.clock import Clock

T = TypeVar("T")


async def hedged(
    clock: Clock,
    after_s: float,
    attempt: Callable[[], Awaitable[T]],
    *,
    may_hedge: Callable[[], bool],
) -> T:
    """`attempt()`'s answer; if it has none after `after_s` seconds on `clock` and
    `may_hedge()` (someone could take the second attempt), a second `attempt()` races it.
    The first success wins and the other is cancelled; when both fail, the error of the one
    that failed last (it knows most). Cancelling the caller cancels both."""
    first = asyncio.ensure_future(attempt())
    running = {first}
    try:
        timer = asyncio.ensure_future(clock.sleep(after_s))
        try:
            await asyncio.wait({first, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all({timer})
        if first.done() or not may_hedge():
            return await first
        running.add(asyncio.ensure_future(attempt()))
        while True:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
                if task.exception() is None:
                    return task.result()
                if not running:
                    return task.result()  # raises: both failed, this one last
    finally:
        await cancel_all(running)


async def cancel_all(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancels `tasks` and waits until they have ended (their outcomes are dropped)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
