"""Level-triggered reconcile of one worker: look at how things are, make them so.

For a worker id it reads the current registration and leadership and converges: a load
feed for every registered worker, a health prober for each when this replica leads, the
leader's health record removed once the worker is gone, and the endpoint sets of the
worker's models (before and now) marked for the hub's next recompute. Running it twice
changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.hub import EndpointHub
from controlplane.ports import LoadFeeds, Probers, Store
from controlplane.view import ClusterView
from modelyard_server.etcd import Keys


class Reconciler:
    def __init__(
        self,
        *,
        view: ClusterView,
        store: Store,
        keys: Keys,
        probers: Probers,
        loads: LoadFeeds,
        hub: EndpointHub,
        is_leader: Callable[[], bool],
    ) -> None:
        self._view = view
        self._store = store
        self._keys = keys
        self._probers = probers
        self._loads = loads
        self._hub = hub
        self._is_leader = is_leader

    async def reconcile(self, worker_id: str) -> None:
        registered = self._view.registration(worker_id)
        if registered is None:
            await self._probers.stop(worker_id)
            await self._loads.stop(worker_id)
            # only the leader writes health records, so only it cleans them up
            if self._is_leader() and self._view.has_health_record(worker_id):
                await self._store.delete(self._keys.worker_health(worker_id))
        else:
            info = registered.value
            await self._loads.ensure(worker_id, info.address)
            if self._is_leader():
                await self._probers.ensure(info, registered.create_revision)
            else:
                await self._probers.stop(worker_id)
        # the sets of the models it serves and of those it no longer serves; a burst of
        # reconciles (start-up, a new leader) asks for them many times, computed once
        self._hub.recompute_soon(self._view.models.reindex(worker_id))
