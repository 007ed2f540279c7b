"""The control plane's picture of the cluster, derived from the informer caches and the
load feeds. Pure reads: nothing here writes, so every replica computes the same sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelyard.endpoints import Endpoint, Load
from modelyard.selectors import Selector
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import DesiredWorker, WorkerHealth, WorkerInfo

NOT_DRAINED = DesiredWorker()


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker: what it registered, what admins want, what the prober saw, its load."""

    info: WorkerInfo
    desired: DesiredWorker
    health: WorkerHealth | None  # None until the leader has probed this registration
    load: Load

    @property
    def reachable(self) -> bool:
        return self.health is None or self.health.reachable

    def serving(self, model: str) -> bool:
        """Eligible for new calls to `model`: registered, reachable, SERVING, not drained.

        A worker registers only after its models loaded, so before the first probe result
        it counts as serving: new workers join within a second, and the prober withdraws
        them as soon as it sees otherwise.
        """
        if self.desired.drain or not self.reachable:
            return False
        if self.health is None:
            return True
        return self.health.models.get(model, False)


class ClusterView:
    def __init__(
        self,
        workers: Mapping[str, Entry[WorkerInfo]],
        desired: Mapping[str, Entry[DesiredWorker]],
        health: Mapping[str, Entry[WorkerHealth]],
        loads: Mapping[str, Load],
    ) -> None:
        # live references to the informers' caches and the load table, not copies
        self._workers = workers
        self._desired = desired
        self._health = health
        self._loads = loads

    def worker_ids(self) -> list[str]:
        return sorted(self._workers)

    def registration(self, worker_id: str) -> Entry[WorkerInfo] | None:
        return self._workers.get(worker_id)

    def has_health_record(self, worker_id: str) -> bool:
        """Whether etcd holds probe results for `worker_id`, of any registration."""
        return worker_id in self._health

    def worker(self, worker_id: str) -> WorkerView | None:
        registered = self._workers.get(worker_id)
        if registered is None:
            return None
        desired = self._desired.get(worker_id)
        health = self._health.get(worker_id)
        current_health = (
            health.value
            if health is not None and health.value.registration == registered.create_revision
            else None  # results about an earlier registration of this id do not count
        )
        return WorkerView(
            info=registered.value,
            desired=desired.value if desired is not None else NOT_DRAINED,
            health=current_health,
            load=self._loads.get(worker_id, Load()),
        )

    def workers(self) -> list[WorkerView]:
        views = (self.worker(worker_id) for worker_id in self.worker_ids())
        return [view for view in views if view is not None]

    def endpoints(self, model: str, selector: Selector) -> tuple[Endpoint, ...]:
        """Every eligible replica of `model` whose tags match `selector`, by worker id."""
        found = []
        for view in self.workers():
            info = view.info
            if not any(m.name == model for m in info.models):
                continue
            if view.serving(model) and selector.matches(info.tags):
                found.append(Endpoint(info.worker_id, info.address, info.tags, view.load))
        return tuple(found)
