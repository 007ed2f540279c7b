"""Fakes of what the control plane's core drives: a store that records every write, and
probers and load feeds that record which started and stopped.

The probers and feeds keep the real pools' contract (controlplane/ports.py): ensuring what
already runs starts nothing, a changed registration or address restarts, and stopping what
does not run does nothing. So their events are what a real process would do, not merely
the calls made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controlplane.hub import Subscription
from modelyard.endpoints import EndpointSet
from modelyard_server.workerinfo import WorkerInfo

Write = tuple[str, ...]  # ("put", key, value) or ("delete", key)
Event = tuple[str | int, ...]  # ("start", worker_id, registration | address) or ("stop", worker_id)


class FakeStore:
    """Records every write, keys and values decoded for readable assertions."""

    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.failure: Exception | None = None  # raised by the next writes while set

    async def put(self, key: bytes, value: bytes) -> object:
        self._fail_if_told()
        self.writes.append(("put", key.decode(), value.decode()))
        return None

    async def delete(self, key: bytes) -> object:
        self._fail_if_told()
        self.writes.append(("delete", key.decode()))
        return None

    def take(self) -> list[Write]:
        """The writes since the last take."""
        taken, self.writes = self.writes, []
        return taken

    def _fail_if_told(self) -> None:
        if self.failure is not None:
            raise self.failure


class _Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def take(self) -> list[Event]:
        """The starts and stops since the last take."""
        taken, self.events = self.events, []
        return taken


class FakeProbers(_Events):
    def __init__(self) -> None:
        super().__init__()
        self.running: dict[str, tuple[WorkerInfo, int]] = {}

    async def ensure(self, info: WorkerInfo, registration: int) -> None:
        if self.running.get(info.worker_id) == (info, registration):
            return
        await self.stop(info.worker_id)
        self.running[info.worker_id] = (info, registration)
        self.events.append(("start", info.worker_id, registration))

    async def stop(self, worker_id: str) -> None:
        if self.running.pop(worker_id, None) is not None:
            self.events.append(("stop", worker_id))


class FakeLoadFeeds(_Events):
    def __init__(self) -> None:
        super().__init__()
        self.running: dict[str, str] = {}

    async def ensure(self, worker_id: str, address: str) -> None:
        if self.running.get(worker_id) == address:
            return
        await self.stop(worker_id)
        self.running[worker_id] = address
        self.events.append(("start", worker_id, address))

    async def stop(self, worker_id: str) -> None:
        if self.running.pop(worker_id, None) is not None:
            self.events.append(("stop", worker_id))


async def offered(subscription: Subscription) -> EndpointSet | None:
    """The set waiting for `subscription`'s reader, taking it; None when nothing new was
    offered since the last one it read."""
    reading = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0)  # a set already offered is read in the task's first step
    if reading.done():
        return reading.result()
    reading.cancel()
    return None


async def until(condition: Callable[[], bool], *, turns: int = 1000) -> None:
    """Lets the loop run until `condition` holds; fails after `turns` loop turns (no wall
    clock: tasks on a FakeClock either get there by themselves or never do)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def settle(turns: int = 20) -> None:
    """Lets tasks that are ready run (and what they start in turn) before a test looks."""
    for _ in range(turns):
        await asyncio.sleep(0)
