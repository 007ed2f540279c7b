"""The control plane's picture of the cluster, derived from the informer caches and the
load feeds. Nothing here writes to etcd, so every replica computes the same sets.

An endpoint set reads only the workers that serve its model (`ModelIndex`), so the cost of
a change grows with the size of the sets it touches, not with the cluster.
"""

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


class ModelIndex:
    """Which workers serve which model, from the registrations cache.

    Built from the whole cache on first use (by then the informer has listed etcd), then
    kept current one worker at a time by `reindex`, which the reconciler calls for every
    worker it reconciles: every registration change is reconciled, so a worker missing
    here is one whose reconcile (and with it the recompute of its sets) is still queued.
    """

    def __init__(self, workers: Mapping[str, Entry[WorkerInfo]]) -> None:
        self._workers = workers
        self._models_of: dict[str, frozenset[str]] | None = None
        self._workers_of: dict[str, set[str]] = {}

    def workers_of(self, model: str) -> list[str]:
        """The ids of `model`'s workers, sorted."""
        self._built()
        return sorted(self._workers_of.get(model, ()))

    def reindex(self, worker_id: str) -> set[str]:
        """Reads `worker_id`'s registration again; returns the models whose workers may
        have changed: those it serves now and those it served before."""
        models_of = self._built()
        before = models_of.pop(worker_id, frozenset())
        registered = self._workers.get(worker_id)
        now = frozenset(m.name for m in registered.value.models) if registered else frozenset()
        if now:
            models_of[worker_id] = now
        for model in before - now:
            served = self._workers_of[model]
            served.discard(worker_id)
            if not served:
                del self._workers_of[model]
        for model in now - before:
            self._workers_of.setdefault(model, set()).add(worker_id)
        return set(before | now)

    def _built(self) -> dict[str, frozenset[str]]:
        if self._models_of is None:
            self._models_of = {}
            for worker_id in list(self._workers):
                self.reindex(worker_id)
        return self._models_of


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
        self.models = ModelIndex(workers)

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
        for worker_id in self.models.workers_of(model):
            view = self.worker(worker_id)
            if view is None:
                continue  # gone: its reconcile, queued, takes it out of the index
            info = view.info
            served = next((m for m in info.models if m.name == model), None)
            if served is None:
                continue  # rewritten with other models, reconcile queued
            if view.serving(model) and selector.matches(info.tags):
                found.append(
                    Endpoint(
                        info.worker_id,
                        info.address,
                        info.tags,
                        view.load,
                        capacity=served.concurrency,
                    )
                )
        return tuple(found)
