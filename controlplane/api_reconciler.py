"""Level-triggered reconcile of one registered third-party API, as `Reconciler` does for a
worker: read the registration and leadership as they are now, and converge. A health
checker runs for each registration while this replica leads; the leader's health record
goes once the registration is gone; the sets of its model (before and now) are marked for
the hub's next recompute. Running it twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from controlplane.api_view import ApiView
from controlplane.hub import EndpointHub
from controlplane.ports import Store
from modelyard_server.etcd import Keys
from modelyard_server.http_api.record import RegistrationRecord


class ApiProbers(Protocol):
    """One health checker per registration (the leader's job)."""

    async def ensure(self, record: RegistrationRecord, registration: int) -> None:
        """Checks `record` (registered at create revision `registration`); restarts a
        checker whose registration changed what it checks, does nothing when current."""
        ...

    async def stop(self, registration_id: str) -> None:
        """Stops checking `registration_id`, if it was checked."""
        ...


class ApiReconciler:
    def __init__(
        self,
        *,
        apis: ApiView,
        store: Store,
        keys: Keys,
        probers: ApiProbers,
        hub: EndpointHub,
        is_leader: Callable[[], bool],
    ) -> None:
        self._apis = apis
        self._store = store
        self._keys = keys
        self._probers = probers
        self._hub = hub
        self._is_leader = is_leader

    async def reconcile(self, registration_id: str) -> None:
        registered = self._apis.registration(registration_id)
        if registered is None:
            await self._probers.stop(registration_id)
            # only the leader writes health records, so only it cleans them up
            if self._is_leader() and self._apis.has_health_record(registration_id):
                await self._store.delete(self._keys.health_of_registration(registration_id))
        elif self._is_leader():
            await self._probers.ensure(registered.value, registered.create_revision)
        else:
            await self._probers.stop(registration_id)
        self._hub.recompute_soon(self._apis.reindex(registration_id))
