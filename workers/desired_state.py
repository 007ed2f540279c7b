"""This worker's desired state (an admin's drain), followed in etcd the client-go way.

    get the key -> act on its value -> watch from that revision + 1 -> act on each event
         ^                                                                  |
         '------ the watch broke (etcd restarted or unreachable, compacted) '

Level-triggered: the handler is given the whole current `DesiredWorker`, never a
transition, so a missed or repeated event cannot leave the worker in the wrong state. An
absent key is the default (not drained). While etcd is unreachable the last known state
stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait, describe_error
from modelyard_server.etcd import EtcdClient
from modelyard_server.workerinfo import DesiredWorker

log = logging.getLogger(__name__)

DesiredListener = Callable[[DesiredWorker], Awaitable[None]]


class DesiredState:
    """Calls `on_change(desired)` with the value of `key` whenever it differs from the last."""

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        on_change: DesiredListener,
        *,
        call_timeout: float = 2.0,
        resync: float = 60.0,
        backoff: Backoff | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._client = client
        self._key = key
        self._on_change = on_change
        self._call_timeout = call_timeout
        # A watch stream can die without telling (a half-open connection): read the key
        # again this often regardless, as informers resync.
        self._resync = resync
        self._retry = (backoff or Backoff()).counter(clock=clock)
        self.current = DesiredWorker()
        self._applied = False
        self._following: bool | None = None
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float) -> None:
        """Starts following the key, and waits up to `wait` seconds for the first read, so a
        worker that was drained before it (re)started does not serve in between."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"desired state {self._key.decode()}"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._attempted.wait()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                revision = await self._read()
                self._attempted.set()
                self._set_following(True, "")
                self._retry.reset()
                await self._follow(revision)
                log.debug("watch on %s ended; reading it again", self._key.decode())
            except Exception as error:  # etcd unreachable or slow, or the stream broke
                self._attempted.set()
                self._set_following(False, describe_error(error))
                await self._retry.wait()

    async def _read(self) -> int:
        """Acts on the key's value; returns the revision it was read at."""
        # A range (not `get`) because aetcd's get returns no revision when the key is absent.
        async with asyncio.timeout(self._call_timeout):
            reply = await self._client.get_range(self._key, self._key + b"\0")
        values = [bytes(kv.value) for kv in reply.kvs]
        await self._apply(values[0] if values else None)
        return int(reply.header.revision)

    async def _follow(self, revision: int) -> None:
        async with asyncio.timeout(self._call_timeout):
            watch = await self._client.watch(self._key, start_revision=revision + 1)
        try:
            async with asyncio.timeout(self._resync):
                async for event in watch:
                    await self._apply(bytes(event.kv.value) if event.kind == "PUT" else None)
        except TimeoutError:
            pass  # time to resync
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._call_timeout):
                    await watch.cancel()

    async def _apply(self, raw: bytes | None) -> None:
        desired = self._decode(raw)
        if desired is None or (self._applied and desired == self.current):
            return
        try:
            await self._on_change(desired)
        except Exception:
            # not recorded as applied: the next read (at the latest, the resync) tries again
            log.exception("applying desired state %s failed", desired)
            return
        # Recorded only once applied: if this is cancelled half-way (a resync, a broken
        # watch), the next read applies it again instead of taking it as done.
        self.current, self._applied = desired, True

    def _decode(self, raw: bytes | None) -> DesiredWorker | None:
        if raw is None:
            return DesiredWorker()
        try:
            return DesiredWorker.from_json(raw)
        except ValidationError as error:
            log.warning(
                "ignoring unreadable desired state at %s (%s); keeping %s",
                self._key.decode(),
                error.errors()[0]["msg"],
                self.current,
            )
            return None

    def _set_following(self, following: bool, reason: str) -> None:
        if following == self._following:
            return
        self._following = following
        if following:
            log.info("following desired state at %s", self._key.decode())
        else:
            log.warning(
                "cannot follow desired state at %s (%s); keeping %s and retrying",
                self._key.decode(),
                reason,
                self.current,
            )
