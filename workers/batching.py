"""Dynamic batching: gather concurrent requests into one model call, and never make a
request wait for company while the model has nothing else to do.

When a batch runs (like Nagle's algorithm: hold back only while something is in flight):

- A request that finds the model idle (no batch running, nobody queued) runs at once, with
  whatever arrived in the same turn of the event loop. Waiting for company then buys
  nothing: the model would sit idle for the whole wait (at one request at a time, a 2 ms
  `max_wait` halved throughput).
- Requests that arrive while a batch runs queue for the next one. Once the model is free,
  the next batch runs as soon as it holds `max_batch_size` requests, or when its oldest
  request has waited `max_wait` since it arrived, whichever comes first. Under load the
  oldest has waited out `max_wait` behind the running batch already, so the next batch
  follows at once with everything that gathered; `max_wait` = 0 never holds a free model.

Queued requests are bounded: once `max_queue_size` wait, `submit` refuses with
RESOURCE_EXHAUSTED, so a burst sheds load at the door instead of growing latency without
bound.

`similar_lengths` splits a batch into groups of inputs of similar length, for models whose
cost grows with the longest input of a call (every row is padded to it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import Reason, ResourceExhausted

T = TypeVar("T")
X = TypeVar("X")


def queue_full(model: str, waiting: str) -> ResourceExhausted:
    """The refusal of a call that finds `model`'s queue full (batched or not, unary or
    stream): one reason, QUEUE_FULL, whichever path refused it. `waiting` says what fills
    the queue, e.g. "3 requests waiting"."""
    return ResourceExhausted(
        f"model '{model}' has {waiting}, its queue limit; retry later or on another replica",
        reason=Reason.QUEUE_FULL,
        metadata={"model": model},
    )


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
        # Entries still waiting for their batch: the queue limit, `depth` and "is the next
        # batch full" count these, so callers that gave up free their place at once.
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
            raise queue_full(self._name, f"{self._live} requests waiting")
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
        ran = False  # whether a batch just ran: then what is queued queued behind it
        while True:
            self._drop_cancelled()
            if ran and self._queue:
                batch = await self._gather()
            else:
                # idle: whoever comes next runs at once, with whoever came in the same turn
                await self._wait_for_arrival(None)
                batch = self._take()
            ran = bool(batch)
            if batch:
                await self._run_batch(batch)

    async def _gather(self) -> list[Pending[T]]:
        while self._queue and self._live < self.max_batch_size:
            # the oldest live request's wait; it counts the time spent behind the last batch
            remaining = self._queue[0].enqueued_at + self.max_wait - self._clock.now()
            if remaining <= 0:
                break
            await self._wait_for_arrival(remaining)
            self._drop_cancelled()
        return self._take()

    def _take(self) -> list[Pending[T]]:
        """The next batch: up to `max_batch_size` live entries, oldest first."""
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


def similar_lengths(
    items: Sequence[X], length: Callable[[X], int], *, spread: float, slack: int
) -> list[list[X]]:
    """`items` in groups whose lengths are alike: within a group the longest is at most
    `spread` times the shortest, or at most `slack` longer (short inputs differ a lot in
    ratio and little in cost). One group when all are alike, the usual case.

    Items keep their order within a group, and groups go in order of their first item, so
    the oldest request's group runs first.
    """
    if len(items) < 2:
        return [list(items)]
    lengths = [length(item) for item in items]
    groups: list[list[int]] = []
    shortest = 0
    for i in sorted(range(len(items)), key=lengths.__getitem__):
        if groups and lengths[i] <= max(shortest * spread, shortest + slack):
            groups[-1].append(i)
        else:
            groups.append([i])
            shortest = lengths[i]
    ordered = sorted((sorted(group) for group in groups), key=lambda group: group[0])
    return [[items[i] for i in group] for group in ordered]
