"""Admin calls write desired state (and only that), for registered workers only."""

from __future__ import annotations

import pytest

from controlplane.admin import Admin
from modelyard.errors import NotFound
from modelyard.selectors import Selector, parse_selector
from tests.unit.controlplane.cluster import KEYS, Cluster


@pytest.fixture
def cluster() -> Cluster:
    cluster = Cluster()
    cluster.register("w1", "echo", tags={"zone": "a"})
    cluster.register("w2", "bert", tags={"zone": "b"})
    return cluster


@pytest.fixture
def admin(cluster: Cluster) -> Admin:
    return Admin(cluster.view, cluster.store, KEYS)


async def test_drain_writes_the_intent_to_the_workers_desired_key(
    cluster: Cluster, admin: Admin
) -> None:
    await admin.drain("w1")

    assert cluster.store.take() == [("put", "/modelyard/desired/workers/w1", '{"drain":true}')]


async def test_undrain_deletes_the_intent(cluster: Cluster, admin: Admin) -> None:
    await admin.undrain("w1")

    assert cluster.store.take() == [("delete", "/modelyard/desired/workers/w1")]


async def test_an_unknown_worker_is_not_found_and_nothing_is_written(
    cluster: Cluster, admin: Admin
) -> None:
    with pytest.raises(NotFound) as drained:
        await admin.drain("ghost")
    with pytest.raises(NotFound):
        await admin.undrain("ghost")

    message = drained.value.message
    assert message == "worker 'ghost' is not registered; registered workers: w1, w2"
    assert cluster.store.take() == []


def test_list_workers_filters_by_model_and_selector(admin: Admin) -> None:
    def listed(model: str, selector: str) -> list[str]:
        return [w.info.worker_id for w in admin.list_workers(model, parse_selector(selector))]

    assert listed("", "") == ["w1", "w2"]
    assert listed("echo", "") == ["w1"]
    assert listed("", "zone=b") == ["w2"]
    assert listed("echo", "zone=b") == []
    assert admin.list_workers("bert", Selector())[0].desired.drain is False
