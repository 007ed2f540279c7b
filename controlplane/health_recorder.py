"""The leader's probe results, written to etcd in the order the probers reported them.

Probers report from their own tasks and must never wait on etcd, so `record` only queues;
`run` writes. Every replica reads the records back through its health informer, so
followers serve the same endpoint sets as the leader.

A prober reports a change once, so a write that fails (etcd electing a leader) is tried
again until it lands, this replica stops leading, or a newer result about the worker
supersedes it; dropped, it would leave a dead worker in the endpoint sets until its lease
ran out.

The same recorder writes the results of registered third-party APIs' checks: `view` is
then the registrations' (anything that tells an id's current registration) and
`health_key` their health key.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from controlplane.ports import Store
from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import describe_error
from modelyard_server.etcd import Keys
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import WorkerHealth

log = logging.getLogger(__name__)

#: between attempts at a write etcd did not take (an etcd election takes a second or two,
#: and the write should land soon after it)
RETRY = Backoff(initial=0.05, cap=0.25)
#: one attempt: a write that reached etcd just as its leader died is lost, and etcd would
#: answer it only after its own request timeout (5 s and more); sent again, it lands (a
#: health record is small: etcd with a leader takes it in milliseconds)
ATTEMPT = 0.5


class Registrations(Protocol):
    """What the recorder reads: the current registration of an id (its create revision)."""

    def registration(self, name: str, /) -> Entry[Any] | None: ...


class HealthRecorder:
    def __init__(
        self,
        *,
        view: Registrations,
        store: Store,
        keys: Keys,
        is_leader: Callable[[], bool],
        clock: Clock = SYSTEM_CLOCK,
        health_key: Callable[[str], bytes] | None = None,
    ) -> None:
        self._view = view
        self._health_key = health_key or keys.worker_health
        self._clock = clock
        self._store = store
        self._is_leader = is_leader
        self._pending: asyncio.Queue[tuple[str, WorkerHealth, int]] = asyncio.Queue()
        self._order = itertools.count()
        self._newest: dict[str, int] = {}  # worker id -> the number of its latest result
        self._arrived = asyncio.Event()

    def record(self, worker_id: str, health: WorkerHealth) -> None:
        """A prober's listener: queues a result for `run` to write."""
        number = next(self._order)
        self._newest[worker_id] = number
        self._pending.put_nowait((worker_id, health, number))
        self._arrived.set()

    async def run(self) -> None:
        """Writes queued results while this replica leads; drops results about workers
        that are gone or registered again since (they would describe the wrong process)."""
        while True:
            worker_id, health, number = await self._pending.get()
            retry = RETRY.counter()
            while self._current(worker_id, health):
                try:
                    async with asyncio.timeout(ATTEMPT):
                        await self._store.put(self._health_key(worker_id), health.to_json())
                    break
                except Exception as error:  # etcd away or electing: again, while it matters
                    log.warning(
                        "cannot record health of %s: %s; trying again",
                        worker_id,
                        describe_error(error),
                    )
                    await self._pause(retry.next())
                if self._newest[worker_id] != number:
                    break  # a newer result about this worker is queued: it is written instead
            if self._newest[worker_id] == number:
                del self._newest[worker_id]

    async def _pause(self, seconds: float) -> None:
        """Waits `seconds`, or less if a new result arrives (it may supersede this one)."""
        self._arrived.clear()
        waits = {
            asyncio.ensure_future(self._clock.sleep(seconds)),
            asyncio.ensure_future(self._arrived.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _current(self, worker_id: str, health: WorkerHealth) -> bool:
        registered = self._view.registration(worker_id)
        return (
            self._is_leader()
            and registered is not None
            and registered.create_revision == health.registration
        )
