"""Dynamic batching: gather concurrent requests into one model call.

The first request of a batch waits at most `max_wait` for others; the batch closes as soon
as it holds `max_batch_size` requests. Requests that arrive while a batch runs wait in a
bounded queue; once it holds `max_queue_size`, `submit` refuses with RESOURCE_EXHAUSTED so
a burst sheds load at the door instead of growing latency without bound.

The deadline of a batch counts from its *oldest* request's arrival, so requests that queued
behind a running batch are not made to wait a second time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import Reason, ResourceExhausted

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    """A request waiting for its batch, and the future its caller awaits."""

    item: T
    future: asyncio.Future[Any]
    enqueued_at: float = field(default=0.0)
    #: Counted in the batcher's live count: submitted, not yet taken into a batch or given up.
    queued: bool = field(default=True)


class Batcher(Generic[T]):
    """Feeds batches of submitted items to `run_batch`, one batch at a time.

    `run_batch` receives the live (not cancelled) pending entries and must settle each
    entry's future. A caller that gives up cancels its future; it is then skipped.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Pending[T]]], Awaitable[None]],
        *,
        max_batch_size: int,
        max_wait: float,
        max_queue_size: int,
        name: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue_size = max_queue_size
        self._name = name
        self._clock = clock
        # Entries in submission order; ones whose caller gave up stay until the loop reaches
        # them (or a compaction), so the deque's length is not the load.
        self._queue: deque[Pending[T]] = deque()
        # Entries still waiting for their batch: the queue limit and `depth` count these, so
        # callers that gave up free their place at once rather than when the loop reaches them.
        self._live = 0
        self._arrival: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self._live

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"batcher-{self._name}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.cancel()
        self._queue.clear()

    def submit(self, item: T) -> asyncio.Future[Any]:
        """Queues an item; await the returned future for its result."""
        if self._live >= self.max_queue_size:
            raise ResourceExhausted(
                f"model '{self._name}' has {self._live} requests waiting, its queue limit; "
                "retry later or on another replica",
                reason=Reason.QUEUE_FULL,
                metadata={"model": self._name},
            )
        if len(self._queue) >= 2 * self.max_queue_size:
            # Mostly given-up entries (live ones are fewer than the limit): drop them, so a
            # client that keeps submitting and cancelling during a long batch cannot grow the
            # deque without bound. Amortised O(1): at least half of it goes each time.
            live = [p for p in self._queue if not p.future.done()]
            self._queue.clear()
            self._queue.extend(live)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = Pending(item, future, self._clock.now())
        self._queue.append(pending)
        self._live += 1
        future.add_done_callback(lambda _: self._leave_queue(pending))
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        return future

    async def _loop(self) -> None:
        while True:
            await self._wait_for_arrival(None)
            batch = await self._gather()
            if batch:
                await self._run_batch(batch)

    async def _gather(self) -> list[Pending[T]]:
        self._drop_cancelled()
        if not self._queue:
            return []
        deadline = self._queue[0].enqueued_at + self.max_wait
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                break
            await self._wait_for_arrival(remaining)
            self._drop_cancelled()
        batch: list[Pending[T]] = []
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            if not pending.future.done():
                self._leave_queue(pending)
                batch.append(pending)
        return batch

    def _leave_queue(self, pending: Pending[T]) -> None:
        """Uncounts an entry once: when taken into a batch, or when its future is settled
        while still queued (its caller cancelled, or `stop`)."""
        if pending.queued:
            pending.queued = False
            self._live -= 1

    def _drop_cancelled(self) -> None:
        # Only the head matters for deadlines; others are skipped when the batch is taken.
        # (They are already uncounted: see `_leave_queue`.)
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()

    async def _wait_for_arrival(self, timeout: float | None) -> None:
        """Returns when an item is queued (at once if one is) or `timeout` passes."""
        if timeout is None and self._queue:
            return
        loop = asyncio.get_running_loop()
        self._arrival = loop.create_future()
        if timeout is None:
            await self._arrival
            return
        timer = loop.create_task(self._clock.sleep(timeout))
        try:
            await asyncio.wait({self._arrival, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
