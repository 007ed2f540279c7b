"""A control plane's core without a network: the informer caches a reconcile reads (plain
dicts here, edited as etcd events would edit them), the real view, hub and reconciler over
them, and fakes for everything it writes or starts."""

from __future__ import annotations

from controlplane.hub import EndpointHub, Subscription
from controlplane.reconciler import Reconciler
from controlplane.view import ClusterView
from modelyard.endpoints import EndpointSet, Load
from modelyard.selectors import Selector
from modelyard_server.etcd import Keys
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import DesiredWorker, ModelInfo, WorkerHealth, WorkerInfo
from tests.unit.controlplane.fakes import FakeLoadFeeds, FakeProbers, FakeStore, offered

KEYS = Keys()


class Cluster:
    def __init__(self) -> None:
        self.workers: dict[str, Entry[WorkerInfo]] = {}
        self.desired: dict[str, Entry[DesiredWorker]] = {}
        self.health: dict[str, Entry[WorkerHealth]] = {}
        self.loads: dict[str, Load] = {}
        self.leader = True
        self.store = FakeStore()
        self.probers = FakeProbers()
        self.feeds = FakeLoadFeeds()
        self.view = ClusterView(self.workers, self.desired, self.health, self.loads)
        self.hub = EndpointHub(self.view.endpoints)
        self.reconciler = Reconciler(
            view=self.view,
            store=self.store,
            keys=KEYS,
            probers=self.probers,
            loads=self.feeds,
            hub=self.hub,
            is_leader=lambda: self.leader,
        )
        self.subscriptions: dict[str, Subscription] = {}
        self._revision = 100

    async def subscribe(self, *models: str) -> None:
        """Subscribes to each model's whole set, reading the one it starts with."""
        for model in models:
            self.subscriptions[model] = self.hub.subscribe(model, Selector())
            await self.offered(model)

    async def offered(self, model: str) -> EndpointSet | None:
        """The set offered to `model`'s subscription since the last look, if any."""
        return await offered(self.subscriptions[model])

    async def members(self, model: str) -> list[str] | None:
        """The worker ids of `offered(model)`; None when nothing new was offered."""
        endpoint_set = await self.offered(model)
        return None if endpoint_set is None else [e.worker_id for e in endpoint_set.endpoints]

    async def settle(self, *worker_ids: str) -> None:
        """Reconciles `worker_ids` and forgets what that did, so a test sees only its own
        step."""
        for worker_id in worker_ids:
            await self.reconciler.reconcile(worker_id)
        self.store.take()
        self.probers.take()
        self.feeds.take()
        for model in self.subscriptions:
            await self.offered(model)

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def register(
        self,
        worker_id: str,
        *models: str,
        address: str = "",
        tags: dict[str, str] | None = None,
    ) -> int:
        """A worker (re)registers under a new lease: a new key, so a new create revision
        (returned)."""
        revision = self._next_revision()
        info = worker_info(worker_id, *models, address=address, tags=tags)
        self.workers[worker_id] = Entry(info, revision, revision)
        return revision

    def update(self, worker_id: str, *models: str) -> None:
        """The worker rewrites its key (same registration, other models)."""
        old = self.workers[worker_id]
        info = old.value.model_copy(update={"models": tuple(ModelInfo(name=m) for m in models)})
        self.workers[worker_id] = Entry(info, old.create_revision, self._next_revision())

    def vanish(self, worker_id: str) -> None:
        """The worker's lease ran out or was revoked: its key is gone."""
        del self.workers[worker_id]

    def drain(self, worker_id: str) -> None:
        revision = self._next_revision()
        self.desired[worker_id] = Entry(DesiredWorker(drain=True), revision, revision)

    def undrain(self, worker_id: str) -> None:
        del self.desired[worker_id]

    def record_health(
        self,
        worker_id: str,
        registration: int,
        *,
        reachable: bool = True,
        serving: dict[str, bool] | None = None,
    ) -> WorkerHealth:
        """The leader's probe results as the health informer reads them back."""
        health = WorkerHealth(reachable=reachable, models=serving or {}, registration=registration)
        revision = self._next_revision()
        self.health[worker_id] = Entry(health, revision, revision)
        return health


def worker_info(
    worker_id: str, *models: str, address: str = "", tags: dict[str, str] | None = None
) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker_id,
        address=address or f"{worker_id}.local:7000",
        models=tuple(ModelInfo(name=m) for m in models),
        tags=tags or {},
    )
