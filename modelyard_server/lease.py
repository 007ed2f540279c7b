"""One etcd lease kept alive: etcd's concurrency.Session, for worker registration and
leader election.

    session = LeaseSession(client, ttl=2.0)
    await session.grant()            # raises if etcd cannot be reached
    ... bind keys to session.lease ...
    reason = await session.lost()    # returns when the lease is gone or can no longer be
                                     # trusted to be alive; `reason` says why
    await session.close()            # stops refreshing and revokes the lease

    later = LeaseSession(client, ttl=2.0)
    await later.resume(lease)        # carries on with a lease a lost session held, if etcd
                                     # still has it (it extends every lease when it elects)

The lease is refreshed every ttl/3. A refresh that fails or hangs is retried until the
lease could have expired (minus a safety margin), not given up after ttl/3: an etcd leader
election takes about a second, and a session that gave up sooner would drop its keys and
leadership for a blip that the lease itself survives. Each attempt has a short limit of its
own (ATTEMPT): a refresh that reached etcd just as its leader died is lost, never answered,
and waiting for it would spend the whole budget while etcd has long elected a new leader.
The margin keeps the holder's view on the safe side: `lost()` returns before etcd can
expire the lease, so a leader steps down before a successor can be elected.

aetcd 1.0 has no keep-alive of its own; its lease objects are untyped, read as `Any`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait, describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")

#: between keep-alive attempts after one failed (an etcd election takes about a second)
REFRESH_RETRY = Backoff(initial=0.1, cap=0.25)
#: the longest one keep-alive may take (etcd answers in milliseconds once it has a leader)
ATTEMPT = 0.5


class LeaseSession:
    def __init__(
        self,
        client: Any,
        *,
        ttl: float,
        clock: Clock = SYSTEM_CLOCK,
        margin: float | None = None,
        name: str = "lease",
    ) -> None:
        self._client = client
        self.ttl = max(1, math.ceil(ttl))  # etcd grants whole seconds
        self._clock = clock
        #: how long before the lease could expire the session calls it lost
        self.margin = margin if margin is not None else self.ttl / 6.0
        self._name = name
        self.lease: Any = None
        self._alive_until = 0.0  # when etcd could expire the lease, on our clock
        self._lost = asyncio.Event()
        self._reason = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_id(self) -> int | None:
        return int(self.lease.id) if self.lease is not None else None

    @property
    def alive(self) -> bool:
        """Whether the lease can be counted on now: also false once the budget has run
        out but the keep-alive task has not run yet to say so (the loop was stalled)."""
        return self.lease is not None and not self._lost.is_set() and self._budget() > 0

    async def grant(self, timeout: float | None = None) -> None:
        """Grants a new lease and starts keeping it alive. `timeout` bounds the grant
        (default: the margin before a lease of this TTL could expire)."""
        asked = self._clock.now()
        lease = await _within(self._clock, self._bound(timeout), self._client.lease(self.ttl))
        self._start(lease, asked)

    async def resume(self, lease: Any, timeout: float | None = None) -> bool:
        """Keeps `lease` alive from now on if etcd still has it (one refresh says), and
        returns whether it did. For a lease whose session was lost while etcd still counted
        it: an etcd leader election can outlast a session's budget, but a new etcd leader
        extends every lease, so its keys are still there. A refresh that fails or hangs is
        tried again (each attempt up to ATTEMPT); raises the last failure if etcd cannot
        answer within `timeout` (default: as `grant`)."""
        deadline = self._clock.now() + self._bound(timeout)
        retry = REFRESH_RETRY.counter(clock=self._clock)
        while True:
            asked = self._clock.now()
            try:
                # One attempt may go to an etcd member that just died, or be refused while
                # etcd elects: try again within the timeout, as the keep-alive does.
                reply = await _within(
                    self._clock, min(max(deadline - asked, 0.0), ATTEMPT), lease.refresh()
                )
                break
            except Exception:
                pause = retry.next()
                if self._clock.now() + pause >= deadline:
                    raise
                await self._clock.sleep(pause)
        if reply is None or int(reply.TTL) <= 0:
            return False
        self._start(lease, asked)
        return True

    def _bound(self, timeout: float | None) -> float:
        return timeout if timeout is not None else self.ttl - self.margin

    def _start(self, lease: Any, asked: float) -> None:
        self.lease = lease
        # counted from when we asked: etcd may have started the TTL at any point since
        self._alive_until = asked + self.ttl
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"keep-alive {self._name}"
        )

    async def lost(self) -> str:
        """Waits until the lease is lost; why."""
        await self._lost.wait()
        return self._reason

    async def _keep_alive(self) -> None:
        try:
            reason = await self._refresh_until_lost()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug here must not look like a live lease
            reason = f"keep-alive crashed: {describe_error(error)}"
        self._lose(reason)

    async def _refresh_until_lost(self) -> str:
        retry = REFRESH_RETRY.counter(clock=self._clock)
        error = ""
        while True:
            if self._budget() <= 0:
                return f"no keep-alive answered before the lease could expire ({error})"
            # on schedule: one refresh each ttl/3; after a failure: again soon
            pause = retry.next() if error else self.ttl / 3.0
            await self._clock.sleep(min(pause, self._budget()))
            budget = self._budget()
            if budget <= 0:
                error = error or "the loop was too busy to refresh in time"
                continue
            asked = self._clock.now()
            try:
                reply = await _within(self._clock, min(budget, ATTEMPT), self.lease.refresh())
            except Exception as failure:  # etcd unreachable or electing: retry within budget
                error = describe_error(failure)
                continue
            # etcd answers a keep-alive for a lease it no longer has with TTL 0, not an error
            if reply is None or int(reply.TTL) <= 0:
                return "the lease expired in etcd"
            if error:
                log.info("%s: keep-alive answered again after: %s", self._name, error)
            error = ""
            retry.reset()
            # etcd restarted the TTL when it handled the refresh, which was after `asked`
            self._alive_until = max(self._alive_until, asked + self.ttl)

    def _budget(self) -> float:
        """How long the session may still count on its lease."""
        return self._alive_until - self.margin - self._clock.now()

    def _lose(self, reason: str) -> None:
        if not self._lost.is_set():
            self._reason = reason
            self._lost.set()

    async def close(self, *, revoke: bool = True, timeout: float = 2.0) -> None:
        """Stops keeping the lease alive and, with `revoke`, revokes it so its keys go at
        once (otherwise they go when it runs out)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        lease, self.lease = self.lease, None
        self._lose("closed")
        if revoke and lease is not None:
            try:
                await _within(self._clock, timeout, lease.revoke())
            except Exception as error:  # etcd away: the keys go when the lease runs out
                log.warning(
                    "%s: could not revoke lease (%s); it expires within %d s",
                    self._name,
                    describe_error(error),
                    self.ttl,
                )

    async def __aenter__(self) -> LeaseSession:
        await self.grant()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.close()


async def _within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """Awaits `work` for at most `seconds` on `clock`, else raises TimeoutError. (Not
    asyncio.timeout: that counts on the loop's clock, and the session's budget is on its
    own.)"""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            task.add_done_callback(_discard_outcome)
    if not task.done():
        raise TimeoutError
    return task.result()


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    # nobody awaits an abandoned call: read its outcome so asyncio does not log
    # "exception was never retrieved" if it fails while being cancelled
    if not task.cancelled():
        task.exception()
