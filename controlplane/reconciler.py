"""Level-triggered reconcile of one worker: look at how things are, make them so.

For a worker id it reads the current registration and leadership and converges: a load
feed for every registered worker, a health prober for each when this replica leads, the
leader's health record removed once the worker is gone, and the endpoint sets of the
worker's models recomputed. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from controlplane.hub import EndpointHub
from controlplane.load import LoadFeeds
from controlplane.prober import ProberPool
from controlplane.view import ClusterView
from controlplane.workqueue import WorkQueue
from modelyard_server.etcd import Keys
from modelyard_server.workerinfo import WorkerHealth

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        *,
        view: ClusterView,
        client: Any,
        keys: Keys,
        loads: LoadFeeds,
        hub: EndpointHub,
        is_leader: Callable[[], bool],
        has_health_record: Callable[[str], bool],
    ) -> None:
        self._view = view
        self._client = client
        self._keys = keys
        self._loads = loads
        self._hub = hub
        self._is_leader = is_leader
        self._has_health_record = has_health_record
        self._writes: asyncio.Queue[tuple[str, WorkerHealth]] = asyncio.Queue()
        self.probers = ProberPool(lambda worker_id, h: self._writes.put_nowait((worker_id, h)))
        # the models each worker served when last reconciled: a worker that leaves or
        # changes its models must also update the sets it is no longer in
        self._models: dict[str, set[str]] = {}

    async def reconcile(self, worker_id: str) -> None:
        registered = self._view.registration(worker_id)
        if registered is None:
            await self.probers.stop(worker_id)
            await self._loads.stop(worker_id)
            if self._is_leader() and self._has_health_record(worker_id):
                await self._client.delete(self._keys.worker_health(worker_id))
            models = self._models.pop(worker_id, set())
        else:
            info = registered.value
            await self._loads.ensure(worker_id, info.address)
            if self._is_leader():
                await self.probers.ensure(info, registered.create_revision)
            else:
                await self.probers.stop(worker_id)
            current = {m.name for m in info.models}
            models = current | self._models.get(worker_id, set())
            self._models[worker_id] = current
        self._hub.recompute(models)

    async def write_health(self) -> None:
        """Writes the prober's results to etcd, in order, while this replica leads."""
        while True:
            worker_id, health = await self._writes.get()
            if not self._is_leader() or self._view.registration(worker_id) is None:
                continue
            try:
                await self._client.put(self._keys.worker_health(worker_id), health.to_json())
            except Exception as error:  # etcd away: the prober reports again on change
                log.warning("cannot record health of %s: %s", worker_id, error)


async def run_controller(queue: WorkQueue, reconciler: Reconciler) -> None:
    """The worker loop: pop a key, reconcile it, retry with backoff when that fails."""
    while True:
        worker_id = await queue.get()
        try:
            await reconciler.reconcile(worker_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            delay = queue.retry_later(worker_id)
            log.warning("reconcile %s failed (%s); retrying in %.2f s", worker_id, error, delay)
        else:
            queue.forget(worker_id)
        finally:
            with contextlib.suppress(Exception):
                queue.done(worker_id)
