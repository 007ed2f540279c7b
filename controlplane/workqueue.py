"""A work queue of keys, as client-go's: each key is queued at most once, a key being
processed that changes again is processed once more afterwards, and failures retry with
per-key exponential backoff. Handlers only enqueue; the controller loop reconciles."""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 5.0) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay

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
        self._failures.pop(key, None)

    def retry_later(self, key: str) -> float:
        """Re-adds `key` after its backoff; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self._base_delay * 2.0**failures, self._max_delay)
        asyncio.get_running_loop().call_later(delay, self.add, key)
        return delay
