"""Admin operations on registered third-party APIs: register, take offline or online,
remove, list. Each writes the registration's key in etcd (`/registrations/<id>`, no lease)
and nothing else: every replica's informer reads it back, and its reconcile puts the API
into (or out of) its model's endpoint sets, so a registration survives restarts.

A registration is validated (modelyard_server.http_api.validation), then its URL's host is
checked by the SSRF guard: an address inside the cluster (loopback, private, link-local,
metadata, ...) is refused unless `allowed_networks` lists it. Writes ride out an etcd
leader election and otherwise fail UNAVAILABLE (modelyard_server.etcd_writes). Changes read
the stored value from etcd itself, not this replica's cache, so a registration made a
moment ago on another replica can be changed at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aetcd

from controlplane.api_view import ApiStatus, ApiView
from modelyard.endpoints import HttpApi
from modelyard.errors import NotFound, Reason, Resource, Unavailable
from modelyard.names import check_name, quote, some_names
from modelyard_server.aio import describe_error
from modelyard_server.etcd import Keys
from modelyard_server.etcd_writes import TRANSIENT, WITHIN, retried
from modelyard_server.http_api import ssrf
from modelyard_server.http_api.record import (
    ApiRecord,
    RegistrationRecord,
    new_registration_id,
)
from modelyard_server.http_api.render import render_url
from modelyard_server.http_api.validation import check_registration

#: how long a read of one registration may wait for etcd (as long as a write may)
READ_WITHIN = WITHIN
#: how long the lookup of a registration's host may take
RESOLVE_WITHIN = 5.0
#: attempts at a compare-and-swap that another admin's change keeps beating
_SWAPS = 5


class RegistrationStore(Protocol):
    """The etcd calls registrations make (an aetcd client is one)."""

    async def get(self, key: bytes) -> Any: ...

    async def put(self, key: bytes, value: bytes) -> object: ...

    async def replace(self, key: bytes, initial_value: bytes, new_value: bytes) -> bool: ...

    async def delete(self, key: bytes) -> object: ...


class RegistrationAdmin:
    def __init__(
        self,
        apis: ApiView,
        store: RegistrationStore,
        keys: Keys,
        *,
        allowed_networks: Sequence[str] = (),
        new_id: Callable[[], str] = new_registration_id,
    ) -> None:
        self._apis = apis
        self._store = store
        self._keys = keys
        self._allowed = tuple(allowed_networks)
        self._new_id = new_id

    def list(self, model: str = "") -> list[ApiStatus]:
        return self._apis.statuses(model)

    def healthy(self, registration_id: str) -> bool:
        return self._apis.healthy(registration_id)

    async def register(self, model: str, owner: str, api: HttpApi) -> RegistrationRecord:
        check_registration(model, owner, api)
        await self._check_address(render_url(api.url_template, model=model), "url_template")
        if api.health_url:
            await self._check_address(api.health_url, "health_url")
        record = RegistrationRecord(
            registration_id=self._unused_id(),
            model=model,
            owner=owner,
            api=ApiRecord.of(api),
            created_at=time.time(),
        )
        key = self._keys.registration(record.registration_id)
        what = f"register {record.registration_id} for model {model}"
        await retried(lambda: self._store.put(key, record.to_json()), what=what)
        return record

    async def _check_address(self, url: str, field: str) -> None:
        """The SSRF guard on `url`'s host (a literal address, or what the name resolves to
        here; a name that does not resolve passes, as the callers check every call)."""
        try:
            async with asyncio.timeout(RESOLVE_WITHIN):
                await ssrf.check_url_async(url, self._allowed, field=f"http_api.{field}")
        except TimeoutError:
            raise Unavailable(
                f"the host of http_api.{field} did not resolve within {RESOLVE_WITHIN:g} s; retry"
            ) from None

    async def set_online(self, registration_id: str, online: bool) -> RegistrationRecord:
        key = self._keys.registration(registration_id)
        what = f"set registration {registration_id} {'online' if online else 'offline'}"
        for _ in range(_SWAPS):
            raw = await self._stored(registration_id)
            record = RegistrationRecord.from_json(raw)
            if record.online == online:
                return record
            changed = record.model_copy(update={"online": online})
            # only if nobody changed or removed it since it was read (a put could bring
            # back a registration another admin just removed)
            if await self._swap(key, raw, changed.to_json(), what):
                return changed
        raise Unavailable(f"registration {registration_id} kept changing; retry")

    async def _swap(self, key: bytes, old: bytes, new: bytes, what: str) -> bool:
        # safe to send again: a swap etcd applied but whose answer was lost fails the
        # second time, and the next read finds the value already changed
        return await retried(lambda: self._store.replace(key, old, new), what=what)

    async def remove(self, registration_id: str) -> None:
        await self._stored(registration_id)
        key = self._keys.registration(registration_id)
        await retried(
            lambda: self._store.delete(key), what=f"remove registration {registration_id}"
        )

    async def _stored(self, registration_id: str) -> bytes:
        """The registration's stored JSON, read from etcd; NotFound when there is none."""
        check_name("registration", registration_id)
        key = self._keys.registration(registration_id)
        try:
            async with asyncio.timeout(READ_WITHIN):
                found = await self._store.get(key)
        except (*TRANSIENT, aetcd.ClientError) as error:
            raise Unavailable(
                f"etcd did not answer a read of registration {registration_id} "
                f"({describe_error(error)}); retry"
            ) from error
        if found is None:
            known = some_names(self._apis.ids())
            raise NotFound(
                f"registration {quote(registration_id)} does not exist; registrations: {known}",
                reason=Reason.NOT_FOUND,
                resource=Resource("registration", registration_id),
            )
        value: bytes = found.value
        return value

    def _unused_id(self) -> str:
        while True:
            registration_id = self._new_id()
            if self._apis.registration(registration_id) is None:
                return registration_id
