"""The leader's probe results, written to etcd in the order the probers reported them.

Probers report from their own tasks and must never wait on etcd, so `record` only queues;
`run` writes. Every replica reads the records back through its health informer, so
followers serve the same endpoint sets as the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controlplane.ports import Store
from controlplane.view import ClusterView
from modelyard_server.aio import describe_error
from modelyard_server.etcd import Keys
from modelyard_server.workerinfo import WorkerHealth

log = logging.getLogger(__name__)


class HealthRecorder:
    def __init__(
        self, *, view: ClusterView, store: Store, keys: Keys, is_leader: Callable[[], bool]
    ) -> None:
        self._view = view
        self._store = store
        self._keys = keys
        self._is_leader = is_leader
        self._pending: asyncio.Queue[tuple[str, WorkerHealth]] = asyncio.Queue()

    def record(self, worker_id: str, health: WorkerHealth) -> None:
        """A prober's listener: queues a result for `run` to write."""
        self._pending.put_nowait((worker_id, health))

    async def run(self) -> None:
        """Writes queued results while this replica leads; drops results about workers
        that are gone or registered again since (they would describe the wrong process)."""
        while True:
            worker_id, health = await self._pending.get()
            registered = self._view.registration(worker_id)
            if not self._is_leader() or registered is None:
                continue
            if registered.create_revision != health.registration:
                continue
            try:
                await self._store.put(self._keys.worker_health(worker_id), health.to_json())
            except Exception as error:  # etcd away: the prober reports again on change
                log.warning("cannot record health of %s: %s", worker_id, describe_error(error))
