"""This worker's entry in etcd, kept alive under a lease: etcd's naming + concurrency.Session.

    grant a lease (ttl) --> put WorkerInfo bound to it --> refresh it every ttl/3 ...
      ^                                                              |
      '---- at once, then with backoff while etcd is unreachable <---'
            (a refresh or a put failed, or etcd no longer has the lease)

Any failure starts over from a new lease. That is always safe: a put with the new lease
moves the key off the old one, so the old lease expiring later deletes nothing. A worker
whose registration fails keeps serving; only `registered` (and the health service
"modelyard.v1.Registration" that the worker derives from it) says so.

aetcd 1.0 has no keep-alive of its own and no types: the loop is here, and what aetcd
returns is narrowed to plain ints and bytes where it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelyard.backoff import Backoff
from modelyard_server.aio import cancel_and_wait, describe_error
from modelyard_server.etcd import EtcdClient
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
        models=tuple(ModelInfo(name=e.name, task=e.task, version=e.version) for e in ready),
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
    ) -> None:
        self._client = client
        self._key = key
        self._info = info
        self._ttl = ttl
        self._on_change = on_change
        self._backoff = (backoff or Backoff()).counter()
        # A request slower than this would make the next refresh late; give up on it and
        # start over (the key itself stays until the last granted TTL runs out).
        self._call_timeout = max(ttl / 3.0, 0.5)
        #: Set while registered: tests and start-up code can wait on it.
        self.registered_event = asyncio.Event()
        self._lease: Any = None  # aetcd.Lease of the current attempt
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state: bool | None = None  # None until the first attempt ends
        self._lost_at = time.monotonic()
        self._ever_registered = False

    @property
    def registered(self) -> bool:
        return self.registered_event.is_set()

    @property
    def lease_id(self) -> int | None:
        return int(self._lease.id) if self._lease is not None else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"registration {self._key.decode()}"
        )

    def update(self) -> None:
        """The info changed (a model became ready or failed): put it again soon."""
        self._dirty.set()

    async def close(self, *, revoke: bool = True) -> None:
        """Stops refreshing and, with `revoke`, deletes the key at once by revoking the lease
        (without it, the key disappears when the lease runs out)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        lease, self._lease = self._lease, None
        if revoke and lease is not None:
            try:
                async with asyncio.timeout(self._call_timeout * 3):
                    await lease.revoke()
            except Exception as error:  # etcd away: the key goes when the lease runs out
                log.warning(
                    "could not revoke lease of %s (%s); it expires within %.0f s",
                    self._key.decode(),
                    describe_error(error),
                    self._ttl,
                )
        await self._set_state(False, "closed")

    async def _run(self) -> None:
        while True:
            try:
                await self._register()
            except Exception as error:  # etcd unreachable, slow, or refusing: try again
                # (a lease granted by a failed attempt holds no key and simply expires)
                await self._set_state(False, f"cannot register: {describe_error(error)}")
                delay = self._backoff.next()
                log.debug("registering %s again in %.2f s", self._key.decode(), delay)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            await self._set_state(True, "")
            reason = await self._keep_alive()
            await self._set_state(False, reason)
            # no pause here: the first new attempt is immediate, backoff starts if it fails

    async def _register(self) -> None:
        self._dirty.clear()  # the put below carries the newest info
        async with asyncio.timeout(self._call_timeout):
            self._lease = await self._client.lease(math.ceil(self._ttl))
        await self._put()

    async def _put(self) -> None:
        info = self._info().to_json()
        async with asyncio.timeout(self._call_timeout):
            await self._client.put(self._key, info, lease=self._lease)

    async def _keep_alive(self) -> str:
        """Refreshes the lease every ttl/3 (and puts changed info) until that fails; returns
        why it stopped."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ttl / 3.0):
                    await self._dirty.wait()
            try:
                if self._dirty.is_set():
                    self._dirty.clear()
                    await self._put()
                async with asyncio.timeout(self._call_timeout):
                    reply = await self._lease.refresh()
            except Exception as error:
                return f"keep-alive failed: {describe_error(error)}"
            # etcd answers a keep-alive for a lease it no longer has with TTL 0, not an error
            if reply is None or int(reply.TTL) <= 0:
                return "the lease expired (the worker was stopped or cut off longer than its TTL)"

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
                down = time.monotonic() - self._lost_at
                log.warning("registered %s again after %.1f s", key, down)
            self._ever_registered = True
        else:
            self.registered_event.clear()
            self._lost_at = time.monotonic()
            if reason != "closed":
                log.warning("not registered in etcd (%s): %s; retrying", key, reason)
        if self._on_change is not None:
            await self._on_change(registered)
