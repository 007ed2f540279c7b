"""Registered third-party APIs in the control plane's core, without a network: which
registrations are endpoints of their model, what a reconcile starts, stops and deletes,
and exactly what the admin calls write to etcd."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.api_reconciler import ApiReconciler
from controlplane.api_view import ApiView, merged
from controlplane.hub import EndpointHub
from controlplane.registrations import RegistrationAdmin
from modelyard.endpoints import Endpoint, HttpApi
from modelyard.errors import InvalidArgument, NotFound
from modelyard.selectors import Selector, parse_selector
from modelyard_server.http_api.record import ApiRecord, RegistrationRecord
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import WorkerHealth
from tests.unit.controlplane.cluster import KEYS
from tests.unit.controlplane.fakes import FakeStore, offered

API = HttpApi(
    url_template="http://api.example.com:8080/{MODEL_NAME}",
    body_template='{"q": {USER_PROMPT}}',
    response_path="answer",
    headers={"Authorization": "Bearer ${KEY}"},
)
WORKER = Endpoint("w1", "w1.local:7000", {"device": "cpu"})


class Registrations:
    """The registrations and health informers' caches, edited as etcd events would."""

    def __init__(self) -> None:
        self.records: dict[str, Entry[RegistrationRecord]] = {}
        self.health: dict[str, Entry[WorkerHealth]] = {}
        self.view = ApiView(self.records, self.health)
        self._revision = 10

    def add(self, registration_id: str, model: str = "echo", *, online: bool = True) -> int:
        self._revision += 1
        record = RegistrationRecord(
            registration_id=registration_id,
            model=model,
            owner="team-a",
            api=ApiRecord.of(API),
            online=online,
        )
        old = self.records.get(registration_id)
        created = old.create_revision if old is not None else self._revision
        self.records[registration_id] = Entry(record, created, self._revision)
        return created

    def checked(self, registration_id: str, healthy: bool, registration: int | None = None) -> None:
        self._revision += 1
        created = self.records[registration_id].create_revision
        health = WorkerHealth(reachable=healthy, registration=registration or created)
        self.health[registration_id] = Entry(health, self._revision, self._revision)

    def ids(self, model: str = "echo", selector: str = "") -> list[str]:
        return [e.worker_id for e in self.view.endpoints(model, parse_selector(selector))]


@pytest.fixture
def apis() -> Registrations:
    return Registrations()


def test_an_online_healthy_registration_is_an_endpoint_of_its_model(apis: Registrations) -> None:
    apis.add("api-1")
    apis.checked("api-1", healthy=True)

    [endpoint] = apis.view.endpoints("echo", Selector())
    assert endpoint.worker_id == "api-1"
    assert endpoint.address == "api.example.com:8080"
    assert endpoint.tags == {"kind": "http-api", "owner": "team-a"}
    assert endpoint.http_api == API
    assert apis.ids("other") == []


def test_offline_unhealthy_or_never_checked_registrations_are_not(apis: Registrations) -> None:
    apis.add("api-offline", online=False)
    apis.checked("api-offline", healthy=True)
    apis.add("api-failing")
    apis.checked("api-failing", healthy=False)
    apis.add("api-unchecked")
    apis.add("api-stale")
    apis.checked("api-stale", healthy=True, registration=1)  # about an earlier registration

    assert apis.ids() == []
    statuses = {s.record.registration_id: s.healthy for s in apis.view.statuses()}
    assert statuses == {
        "api-offline": True,
        "api-failing": False,
        "api-unchecked": False,
        "api-stale": False,
    }


def test_a_selector_its_tags_do_not_match_leaves_it_out(apis: Registrations) -> None:
    apis.add("api-1")
    apis.checked("api-1", healthy=True)

    assert apis.ids(selector="device=cpu") == []
    assert apis.ids(selector="kind=http-api") == ["api-1"]


def test_a_models_set_holds_its_workers_and_registrations_by_id() -> None:
    api = Endpoint("api-0", "h:80")
    assert merged((WORKER,), (api,)) == (api, WORKER)
    assert merged((WORKER,), ()) == (WORKER,)


@dataclass
class FakeApiProbers:
    running: dict[str, int]
    events: list[tuple[str, ...]]

    async def ensure(self, record: RegistrationRecord, registration: int) -> None:
        if self.running.get(record.registration_id) != registration:
            self.running[record.registration_id] = registration
            self.events.append(("start", record.registration_id))

    async def stop(self, registration_id: str) -> None:
        if self.running.pop(registration_id, None) is not None:
            self.events.append(("stop", registration_id))


class Core:
    def __init__(self) -> None:
        self.apis = Registrations()
        self.store = FakeStore()
        self.probers = FakeApiProbers({}, [])
        self.leader = True
        self.hub = EndpointHub(lambda model, selector: self.apis.view.endpoints(model, selector))
        self.reconciler = ApiReconciler(
            apis=self.apis.view,
            store=self.store,
            keys=KEYS,
            probers=self.probers,
            hub=self.hub,
            is_leader=lambda: self.leader,
        )


async def test_the_leader_checks_each_registration_and_cleans_up_after_it() -> None:
    core = Core()
    subscription = core.hub.subscribe("echo", Selector())
    await offered(subscription)
    core.apis.add("api-1")

    await core.reconciler.reconcile("api-1")
    assert core.probers.events == [("start", "api-1")]
    core.apis.checked("api-1", healthy=True)
    await core.reconciler.reconcile("api-1")
    found = await offered(subscription)
    assert found is not None and [e.worker_id for e in found.endpoints] == ["api-1"]

    del core.apis.records["api-1"]
    await core.reconciler.reconcile("api-1")
    assert core.probers.events[-1] == ("stop", "api-1")
    assert core.store.take() == [("delete", "/modelyard/health/registrations/api-1")]
    found = await offered(subscription)
    assert found is not None and found.endpoints == ()


async def test_a_follower_checks_nothing_and_deletes_nothing() -> None:
    core = Core()
    core.leader = False
    core.apis.add("api-1")
    core.apis.checked("api-1", healthy=True)

    await core.reconciler.reconcile("api-1")
    del core.apis.records["api-1"]
    await core.reconciler.reconcile("api-1")

    assert core.probers.events == []
    assert core.store.take() == []


class FakeRegistrationStore(FakeStore):
    """A FakeStore that also keeps the values, for the admin calls' reads and swaps."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, bytes] = {}

    async def get(self, key: bytes) -> Any:
        value = self.values.get(key.decode())
        return None if value is None else Entry(value, 1, 1)  # (has .value, as aetcd's)

    async def put(self, key: bytes, value: bytes) -> object:
        await super().put(key, value)
        self.values[key.decode()] = value
        return None

    async def replace(self, key: bytes, initial_value: bytes, new_value: bytes) -> bool:
        if self.values.get(key.decode()) != initial_value:
            return False
        self.writes.append(("replace", key.decode(), new_value.decode()))
        self.values[key.decode()] = new_value
        return True

    async def delete(self, key: bytes) -> object:
        await super().delete(key)
        self.values.pop(key.decode(), None)
        return None


@pytest.fixture
def store() -> FakeRegistrationStore:
    return FakeRegistrationStore()


@pytest.fixture
def admin(apis: Registrations, store: FakeRegistrationStore) -> RegistrationAdmin:
    # a literal public address: the SSRF guard needs no lookup
    return RegistrationAdmin(apis.view, store, KEYS, new_id=lambda: "api-0000abcd")


PUBLIC = HttpApi(
    url_template="https://8.8.8.8/v1",
    body_template='{"q": {USER_PROMPT}}',
    response_path="answer",
    headers={"X-Api-Key": "${KEY}"},
)


async def test_register_writes_one_versioned_record_under_a_new_id(
    admin: RegistrationAdmin, store: FakeRegistrationStore
) -> None:
    record = await admin.register("echo", "team-a", PUBLIC)

    [(kind, key, value)] = store.take()
    assert (kind, key) == ("put", "/modelyard/registrations/api-0000abcd")
    stored = json.loads(value)
    assert stored["schema_version"] == 1
    assert stored["registration_id"] == record.registration_id == "api-0000abcd"
    assert (stored["model"], stored["owner"], stored["online"]) == ("echo", "team-a", True)
    assert stored["api"]["headers"] == {"X-Api-Key": "${KEY}"}
    assert RegistrationRecord.from_json(value.encode()) == record


async def test_an_invalid_or_internal_registration_writes_nothing(
    admin: RegistrationAdmin, store: FakeRegistrationStore
) -> None:
    with pytest.raises(InvalidArgument) as internal:
        await admin.register("echo", "", HttpApi("http://10.1.2.3/x", '{"q": {USER_PROMPT}}', "a"))
    with pytest.raises(InvalidArgument):
        await admin.register("echo", "", HttpApi("https://8.8.8.8/x", '{"q": 1}', "a"))

    assert internal.value.field == "http_api.url_template"
    assert store.take() == []


async def test_offline_and_online_swap_the_stored_value_and_repeat_harmlessly(
    admin: RegistrationAdmin, store: FakeRegistrationStore
) -> None:
    await admin.register("echo", "", PUBLIC)
    store.take()

    offline = await admin.set_online("api-0000abcd", False)
    again = await admin.set_online("api-0000abcd", False)

    assert not offline.online and again == offline
    [(kind, key, value)] = store.take()  # the second found it offline already
    assert (kind, key, json.loads(value)["online"]) == (
        "replace",
        "/modelyard/registrations/api-0000abcd",
        False,
    )


async def test_an_unknown_registration_is_not_found_and_nothing_is_written(
    admin: RegistrationAdmin, store: FakeRegistrationStore
) -> None:
    with pytest.raises(NotFound) as removed:
        await admin.remove("api-ffffffff")
    with pytest.raises(NotFound):
        await admin.set_online("api-ffffffff", True)

    assert (
        removed.value.message == "registration 'api-ffffffff' does not exist; registrations: none"
    )
    assert store.take() == []
