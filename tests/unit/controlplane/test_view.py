"""The cluster view: which registered workers are eligible replicas of a model, from the
registrations, admin intent, the leader's probe results and the load feeds."""

from __future__ import annotations

from dataclasses import replace

from modelyard.endpoints import Endpoint, Load
from modelyard.selectors import Selector, parse_selector
from modelyard_server.workerinfo import DesiredWorker, ModelInfo, WorkerInfo
from tests.unit.controlplane.cluster import Cluster, worker_info

EVERYONE = Selector()


def ids(endpoints: tuple[Endpoint, ...]) -> list[str]:
    return [e.worker_id for e in endpoints]


def test_a_registered_worker_not_yet_probed_serves_with_its_tags_and_load() -> None:
    cluster = Cluster()
    cluster.register("w1", "echo", address="w1.local:7000", tags={"device": "cpu"})
    cluster.loads["w1"] = Load(in_flight=2, queue_depth=1, latency_ms=3.5)

    assert cluster.view.endpoints("echo", EVERYONE) == (
        Endpoint("w1", "w1.local:7000", {"device": "cpu"}, Load(2, 1, 3.5)),
    )


def test_a_worker_without_a_load_report_has_zero_load() -> None:
    cluster = Cluster()
    cluster.register("w1", "echo")

    (only,) = cluster.view.endpoints("echo", EVERYONE)

    assert only.load == Load()


def test_drained_unreachable_and_not_serving_workers_are_not_replicas() -> None:
    cluster = Cluster()
    for worker_id in ("drained", "down", "not-serving", "fine", "probed"):
        cluster.register(worker_id, "echo")
    cluster.drain("drained")
    cluster.record_health("down", cluster.workers["down"].create_revision, reachable=False)
    not_serving = cluster.workers["not-serving"].create_revision
    cluster.record_health("not-serving", not_serving, serving={"echo": False})
    probed = cluster.workers["probed"].create_revision
    cluster.record_health("probed", probed, serving={"echo": True})

    assert ids(cluster.view.endpoints("echo", EVERYONE)) == ["fine", "probed"]


def test_a_model_missing_from_the_probe_results_is_not_served() -> None:
    cluster = Cluster()
    registration = cluster.register("w1", "echo", "bert")
    cluster.record_health("w1", registration, serving={"echo": True})

    assert ids(cluster.view.endpoints("echo", EVERYONE)) == ["w1"]
    assert ids(cluster.view.endpoints("bert", EVERYONE)) == []


def test_probe_results_of_an_earlier_registration_are_ignored() -> None:
    cluster = Cluster()
    earlier = cluster.register("w1", "echo")
    cluster.record_health("w1", earlier, reachable=False)
    cluster.register("w1", "echo")

    view = cluster.view.worker("w1")

    assert view is not None and view.health is None and view.reachable
    assert ids(cluster.view.endpoints("echo", EVERYONE)) == ["w1"]


def test_a_selector_narrows_the_replicas_and_other_models_are_left_out() -> None:
    cluster = Cluster()
    cluster.register("gpu", "echo", tags={"device": "cuda"})
    cluster.register("cpu", "echo", tags={"device": "cpu"})
    cluster.register("other", "bert", tags={"device": "cuda"})

    assert ids(cluster.view.endpoints("echo", parse_selector("device=cuda"))) == ["gpu"]
    assert ids(cluster.view.endpoints("echo", EVERYONE)) == ["cpu", "gpu"]  # by worker id


def test_a_workers_view_combines_registration_intent_health_and_load() -> None:
    cluster = Cluster()
    registration = cluster.register("w1", "echo")
    cluster.drain("w1")
    health = cluster.record_health("w1", registration, serving={"echo": True})
    cluster.loads["w1"] = Load(in_flight=1)

    view = cluster.view.worker("w1")

    assert view is not None
    assert (view.info, view.desired, view.health, view.load) == (
        worker_info("w1", "echo"),
        DesiredWorker(drain=True),
        health,
        Load(in_flight=1),
    )
    assert not view.serving("echo")  # drained
    assert cluster.view.worker("ghost") is None
    assert cluster.view.worker_ids() == ["w1"]
    assert cluster.view.has_health_record("w1") and not cluster.view.has_health_record("w2")


def test_each_replica_says_how_many_calls_of_its_model_it_serves_at_once() -> None:
    cluster = Cluster()
    cluster.register("w1", "echo", "gpt2")
    entry = cluster.workers["w1"]
    models = (ModelInfo(name="echo", concurrency=8), ModelInfo(name="gpt2", concurrency=1))
    cluster.workers["w1"] = replace(entry, value=entry.value.model_copy(update={"models": models}))

    (echo,) = cluster.view.endpoints("echo", EVERYONE)
    (gpt2,) = cluster.view.endpoints("gpt2", EVERYONE)

    assert (echo.capacity, gpt2.capacity) == (8, 1)


def test_a_worker_registered_before_schema_2_has_an_unknown_capacity() -> None:
    old = b'{"schema_version":1,"worker_id":"w1","address":"w:1","models":[{"name":"echo"}]}'
    cluster = Cluster()
    cluster.register("w1", "echo")
    cluster.workers["w1"] = replace(cluster.workers["w1"], value=WorkerInfo.from_json(old))

    (only,) = cluster.view.endpoints("echo", EVERYONE)

    assert only.capacity == 0
