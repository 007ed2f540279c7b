"""This worker's entry in etcd, kept alive under a lease: etcd's naming + concurrency.Session.

    grant a lease (a LeaseSession: it refreshes every ttl/3) --> put WorkerInfo bound to it
      ^                                                  (and again whenever `update` says)
      |                                                              |
      '---- at once, then with backoff while etcd is unreachable <---'
            (the session lost its lease, or a put failed)

Any failure starts over, and first with the lease it had: an etcd leader election can
outlast the session's budget although etcd keeps (and extends) every lease, so if that
lease is still alive the worker carries on with it, its key never having left etcd, and
stays registered throughout. Only a lease etcd no longer has is replaced by a new one. (So
a worker cut off from etcd reports itself unregistered up to a TTL after its session gave
up on the lease: that long it waits for etcd to answer about the old one.)
That is always safe: a put with the new lease moves the key off the old one, so the old
lease expiring later deletes nothing. A worker whose registration fails keeps serving;
only `registered` (and the health service "modelyard.v1.Registration" that the worker
derives from it) says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait, describe_error
from modelyard_server.etcd import EtcdClient
from modelyard_server.lease import LeaseSession
from modelyard_server.workerinfo import ModelInfo, WorkerInfo
from workers.registry import ModelRegistry, ModelState

log = logging.getLogger(__name__)

StateListener = Callable[[bool], Awaitable[None]]


def describe_worker(
    worker_id: str,
    address: str,
    registry: ModelRegistry,
    tags: dict[str, str],
    started_at: float,
) -> WorkerInfo:
    """What the control plane should know: only models that can take calls are listed."""
    ready = [e for e in registry.entries() if e.state is ModelState.READY]
    return WorkerInfo(
        worker_id=worker_id,
        address=address,
        models=tuple(
            ModelInfo(
                name=e.name,
                task=e.task,
                version=e.version,
                concurrency=e.config.batching.max_batch_size,
            )
            for e in ready
        ),
        tags=tags,
        capacity=sum(e.config.batching.max_queue_size for e in ready),
        started_at=started_at,
    )


class Registration:
    """Keeps `key` = `info()` in etcd under a lease of `ttl` seconds until `close`."""

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        info: Callable[[], WorkerInfo],
        *,
        ttl: float,
        on_change: StateListener | None = None,
        backoff: Backoff | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._client = client
        self._key = key
        self._info = info
        self._ttl = ttl
        self._on_change = on_change
        self._clock = clock
        self._retry = (backoff or Backoff()).counter(clock=clock)
        # A grant or put slower than this would hold up registering for no gain: give up
        # on it and start over.
        self._call_timeout = max(ttl / 3.0, 0.5)
        #: Set while registered: tests and start-up code can wait on it.
        self.registered_event = asyncio.Event()
        self._session: LeaseSession | None = None  # of the current attempt
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state: bool | None = None  # None until the first attempt ends
        self._lost_at = clock.now()
        self._ever_registered = False

    @property
    def registered(self) -> bool:
        return self.registered_event.is_set()

    @property
    def lease_id(self) -> int | None:
        return self._session.lease_id if self._session is not None else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"registration {self._key.decode()}"
        )

    def update(self) -> None:
        """The info changed (a model became ready or failed): put it again now."""
        self._dirty.set()

    async def close(self, *, revoke: bool = True) -> None:
        """Stops refreshing and, with `revoke`, deletes the key at once by revoking the lease
        (without it, the key disappears when the lease runs out)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        session, self._session = self._session, None
        if session is not None:
            await session.close(revoke=revoke, timeout=self._call_timeout * 3)
        await self._set_state(False, "closed")

    async def _run(self) -> None:
        previous: object = None  # the lease of the last attempt, if it may still be alive
        while True:
            session = LeaseSession(
                self._client, ttl=self._ttl, clock=self._clock, name=self._key.decode()
            )
            self._session = session
            try:
                await self._register(session, previous)
            except Exception as error:  # etcd unreachable, slow, or refusing: try again
                # (a lease granted by a failed attempt holds no key and simply expires)
                previous = session.lease or previous
                await session.close(revoke=False)
                await self._set_state(False, f"cannot register: {describe_error(error)}")
                delay = self._retry.next()
                log.debug("registering %s again in %.2f s", self._key.decode(), delay)
                await self._clock.sleep(delay)
                continue
            if previous is not None:
                kept = "kept" if session.lease is previous else "registered under new"
                log.info("%s: %s lease %x", self._key.decode(), kept, session.lease_id)
            self._retry.reset()
            await self._set_state(True, "")
            reason = await self._keep_current(session)
            previous = session.lease
            await session.close(revoke=False)  # lost already, or its key is out of date
            log.info("registration %s: %s; carrying on", self._key.decode(), reason)
            # no pause, and still registered until an attempt fails: the next attempt is
            # immediate and resumes the same lease if etcd kept it

    async def _register(self, session: LeaseSession, previous: object) -> None:
        self._dirty.clear()  # the put below carries the newest info
        # Up to a TTL for etcd to answer about the old lease: etcd still electing holds the
        # refresh, and a new etcd leader gives every lease its whole TTL again.
        resumed = previous is not None and await session.resume(previous, timeout=session.ttl)
        if not resumed:
            await session.grant(timeout=self._call_timeout)
        await self._put(session)

    async def _put(self, session: LeaseSession) -> None:
        info = self._info().to_json()
        async with asyncio.timeout(self._call_timeout):
            await self._client.put(self._key, info, lease=session.lease)

    async def _keep_current(self, session: LeaseSession) -> str:
        """Puts changed info as soon as `update` says, until the session loses its lease or
        a put fails; returns why it stopped."""
        lost = asyncio.create_task(session.lost())
        changed: asyncio.Task[bool] | None = None
        try:
            while True:
                changed = asyncio.create_task(self._dirty.wait())
                await asyncio.wait((lost, changed), return_when=asyncio.FIRST_COMPLETED)
                if lost.done():
                    return f"lease lost: {lost.result()}"
                self._dirty.clear()
                try:
                    await self._put(session)
                except Exception as error:
                    return f"cannot put changed info: {describe_error(error)}"
        finally:
            lost.cancel()
            if changed is not None:
                changed.cancel()

    async def _set_state(self, registered: bool, reason: str) -> None:
        # One log line per change of state, however many attempts fail in between.
        if registered == self._state:
            return
        self._state = registered
        key = self._key.decode()
        if registered:
            self.registered_event.set()
            if not self._ever_registered:
                ttl = math.ceil(self._ttl)
                log.info("registered %s (lease %x, ttl %d s)", key, self.lease_id, ttl)
            else:
                down = self._clock.now() - self._lost_at
                log.warning("registered %s again after %.1f s", key, down)
            self._ever_registered = True
        else:
            self.registered_event.clear()
            self._lost_at = self._clock.now()
            if reason != "closed":
                log.warning("not registered in etcd (%s): %s; retrying", key, reason)
        if self._on_change is not None:
            await self._on_change(registered)
