"""Admin operations: they write desired state to etcd and read the cluster view.

Nothing here lives only in memory: a drain is a key in etcd that the worker obeys and every
control-plane replica sees, so it survives restarts of either. Writes ride out an etcd
leader election and otherwise fail UNAVAILABLE (modelyard_server.etcd_writes).
"""

from __future__ import annotations

from controlplane.ports import Store
from controlplane.view import ClusterView, WorkerView
from modelyard.errors import NotFound, Reason, Resource
from modelyard.names import check_name, quote, some_names
from modelyard.selectors import Selector
from modelyard_server.etcd import Keys
from modelyard_server.etcd_writes import retried
from modelyard_server.workerinfo import DesiredWorker


class Admin:
    def __init__(self, view: ClusterView, store: Store, keys: Keys) -> None:
        self._view = view
        self._store = store
        self._keys = keys

    def list_workers(self, model: str, selector: Selector) -> list[WorkerView]:
        return [
            worker
            for worker in self._view.workers()
            if (not model or any(m.name == model for m in worker.info.models))
            and selector.matches(worker.info.tags)
        ]

    async def drain(self, worker_id: str) -> None:
        self._require(worker_id)
        key, value = self._keys.desired_worker(worker_id), DesiredWorker(drain=True).to_json()
        await retried(lambda: self._store.put(key, value), what=f"drain worker '{worker_id}'")

    async def undrain(self, worker_id: str) -> None:
        self._require(worker_id)
        key = self._keys.desired_worker(worker_id)
        await retried(lambda: self._store.delete(key), what=f"undrain worker '{worker_id}'")

    def _require(self, worker_id: str) -> None:
        check_name("worker", worker_id)
        if self._view.registration(worker_id) is None:
            known = some_names(self._view.worker_ids())
            raise NotFound(
                f"worker {quote(worker_id)} is not registered; registered workers: {known}",
                reason=Reason.WORKER_NOT_FOUND,
                resource=Resource("worker", worker_id),
            )
