"""Registered third-party APIs as the control plane sees them: what admins stored, what
the leader's checks found, and the endpoints they add to their model's set.

An online registration whose last active check passed (for this registration of its id)
is an endpoint of its model beside the model's workers: `worker_id` is the registration's
id, `address` the API's host:port, tags {"kind": "http-api", "owner": ...}, and `http_api`
says how to call it. One that was never checked is not in any set yet: an API nobody
reached may not exist (a mistyped URL), and the leader checks a new one at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelyard.endpoints import Endpoint
from modelyard.selectors import Selector
from modelyard_server.http_api.record import RegistrationRecord
from modelyard_server.http_api.render import render_url
from modelyard_server.http_api.validation import host_port
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import WorkerHealth

KIND_TAG = "kind"
KIND = "http-api"
OWNER_TAG = "owner"


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """One registration and whether its last check (of this registration) passed."""

    record: RegistrationRecord
    healthy: bool


def api_address(record: RegistrationRecord) -> str:
    """The host:port calls to `record` connect to."""
    return host_port(urlsplit(render_url(record.api.url_template, model=record.model)))


def api_tags(record: RegistrationRecord) -> dict[str, str]:
    tags = {KIND_TAG: KIND}
    if record.owner:
        tags[OWNER_TAG] = record.owner
    return tags


class ApiView:
    def __init__(
        self,
        registrations: Mapping[str, Entry[RegistrationRecord]],
        health: Mapping[str, Entry[WorkerHealth]],
    ) -> None:
        # live references to the informers' caches, not copies
        self._registrations = registrations
        self._health = health
        # model -> ids, kept current by `reindex` (the reconciler calls it for every
        # change); built from the whole cache on first use, as ModelIndex is
        self._model_of: dict[str, str] | None = None
        self._ids_of: dict[str, set[str]] = {}

    def ids(self) -> list[str]:
        return sorted(self._registrations)

    def registration(self, registration_id: str) -> Entry[RegistrationRecord] | None:
        return self._registrations.get(registration_id)

    def has_health_record(self, registration_id: str) -> bool:
        return registration_id in self._health

    def healthy(self, registration_id: str) -> bool:
        registered = self._registrations.get(registration_id)
        health = self._health.get(registration_id)
        return (
            registered is not None
            and health is not None
            # results about an earlier registration under this id do not count
            and health.value.registration == registered.create_revision
            and health.value.reachable
        )

    def serves(self, model: str) -> bool:
        """Whether some registration (online or not) is of `model`."""
        return bool(self._built_index().get(model))

    def statuses(self, model: str = "") -> list[ApiStatus]:
        """Every registration (of `model`, when given), sorted by model then id."""
        found = [
            ApiStatus(entry.value, self.healthy(registration_id))
            for registration_id, entry in self._registrations.items()
            if not model or entry.value.model == model
        ]
        return sorted(found, key=lambda s: (s.record.model, s.record.registration_id))

    def endpoints(self, model: str, selector: Selector) -> tuple[Endpoint, ...]:
        """The online, healthy registrations of `model` whose tags match, by id."""
        found = []
        for registration_id in sorted(self._built_index().get(model, ())):
            registered = self._registrations.get(registration_id)
            if registered is None or registered.value.model != model:
                continue  # changed: its reconcile, queued, reindexes it
            record = registered.value
            tags = api_tags(record)
            if record.online and self.healthy(registration_id) and selector.matches(tags):
                found.append(
                    Endpoint(
                        registration_id,
                        api_address(record),
                        tags,
                        http_api=record.api.http_api(),
                    )
                )
        return tuple(found)

    def reindex(self, registration_id: str) -> set[str]:
        """Reads `registration_id` again; returns the models whose sets it may change:
        the one it serves now and the one it served before."""
        self._built_index()
        assert self._model_of is not None
        before = self._model_of.pop(registration_id, None)
        registered = self._registrations.get(registration_id)
        now = registered.value.model if registered is not None else None
        if before is not None:
            ids = self._ids_of[before]
            ids.discard(registration_id)
            if not ids:
                del self._ids_of[before]
        if now is not None:
            self._model_of[registration_id] = now
            self._ids_of.setdefault(now, set()).add(registration_id)
        return {m for m in (before, now) if m is not None}

    def _built_index(self) -> dict[str, set[str]]:
        if self._model_of is None:
            self._model_of = {}
            for registration_id in list(self._registrations):
                self.reindex(registration_id)
        return self._ids_of


def merged(workers: tuple[Endpoint, ...], apis: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    """A model's whole set: its workers and its registered APIs, sorted by id."""
    if not apis:
        return workers
    return tuple(sorted((*workers, *apis), key=lambda e: e.worker_id))
