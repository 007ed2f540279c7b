"""A work queue of keys, as client-go's: each key is queued at most once, a key being
processed that changes again is processed once more afterwards, and failures retry with
per-key exponential backoff. Handlers only enqueue; the controller loop reconciles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from modelyard.backoff import Backoff, BackoffCounter
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait, describe_error

log = logging.getLogger(__name__)

#: after a failed reconcile: soon at first (etcd blips), at most every 5 s while it fails
RETRY = Backoff(initial=0.05, cap=5.0)


class WorkQueue:
    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, backoff: Backoff = RETRY) -> None:
        self._clock = clock
        self._backoff = backoff
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._retries: dict[str, BackoffCounter] = {}
        self._delayed: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)  # changed while being reconciled: go round once more
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: str) -> None:
        """The key reconciled: its next failure starts the backoff afresh."""
        self._retries.pop(key, None)

    def retry_later(self, key: str) -> float:
        """Re-adds `key` after its backoff; returns the delay. A key already waiting for a
        retry keeps its earlier one."""
        counter = self._retries.get(key)
        if counter is None:
            counter = self._retries[key] = self._backoff.counter(clock=self._clock)
        delay = counter.next()
        if key not in self._delayed:
            self._delayed[key] = asyncio.get_running_loop().create_task(
                self._add_at(key, self._clock.now() + delay), name=f"retry {key}"
            )
        return delay

    async def _add_at(self, key: str, due: float) -> None:
        await self._clock.sleep(due - self._clock.now())  # counted from the failure
        del self._delayed[key]
        self.add(key)

    async def close(self) -> None:
        """Drops the retries still waiting (on shutdown)."""
        for task in list(self._delayed.values()):
            await cancel_and_wait(task)
        self._delayed.clear()


async def run_controller(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]]) -> None:
    """The worker loop: pop a key, reconcile it, retry with backoff when that fails."""
    while True:
        key = await queue.get()
        try:
            await reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            delay = queue.retry_later(key)
            log.warning(
                "reconcile %s failed (%s); retrying in %.2f s", key, describe_error(error), delay
            )
        else:
            queue.forget(key)
        finally:
            queue.done(key)
