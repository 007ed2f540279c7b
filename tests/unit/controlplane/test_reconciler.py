"""reconcile(worker_id) on its own: for each situation, the exact writes it makes, exactly
which probes and load feeds start or stop, and the endpoint sets subscribers receive."""

from __future__ import annotations

import pytest

from modelyard.endpoints import Endpoint, EndpointSet
from tests.unit.controlplane.cluster import Cluster

HEALTH_W1 = "/modelyard/health/workers/w1"


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


async def test_a_new_worker_is_fed_probed_and_joins_the_sets_of_its_models(
    cluster: Cluster,
) -> None:
    await cluster.subscribe("echo", "bert")
    before = cluster.subscriptions["echo"].version
    registration = cluster.register("w1", "echo", address="w1.local:7000", tags={"zone": "a"})

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == [("start", "w1", registration)]
    assert cluster.feeds.take() == [("start", "w1", "w1.local:7000")]
    joined = await cluster.offered("echo")
    assert joined is not None and joined.version > before
    assert joined == EndpointSet(
        "echo", joined.version, (Endpoint("w1", "w1.local:7000", {"zone": "a"}),)
    )
    assert await cluster.offered("bert") is None  # not its model: that set is untouched


async def test_reconciling_a_converged_worker_again_does_nothing(cluster: Cluster) -> None:
    await cluster.subscribe("echo")
    cluster.register("w1", "echo")
    await cluster.settle("w1")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == []
    assert await cluster.offered("echo") is None


async def test_a_worker_whose_lease_vanished_is_no_longer_probed_fed_recorded_or_listed(
    cluster: Cluster,
) -> None:
    await cluster.subscribe("echo")
    registration = cluster.register("w1", "echo")
    cluster.register("w2", "echo")
    await cluster.settle("w1", "w2")
    cluster.record_health("w1", registration, serving={"echo": True})
    cluster.vanish("w1")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == [("delete", HEALTH_W1)]
    assert cluster.probers.take() == [("stop", "w1")]
    assert cluster.feeds.take() == [("stop", "w1")]
    assert await cluster.members("echo") == ["w2"]


async def test_a_vanished_worker_that_was_never_probed_needs_no_write(cluster: Cluster) -> None:
    cluster.register("w1", "echo")
    await cluster.settle("w1")
    cluster.vanish("w1")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == [("stop", "w1")]


async def test_a_follower_leaves_a_vanished_workers_health_record_to_the_leader(
    cluster: Cluster,
) -> None:
    cluster.leader = False
    registration = cluster.register("w1", "echo")
    await cluster.settle("w1")
    cluster.record_health("w1", registration, serving={"echo": True})
    cluster.vanish("w1")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == [("stop", "w1")]


async def test_a_new_leader_clears_the_record_of_a_worker_that_left_before_it_led(
    cluster: Cluster,
) -> None:
    cluster.record_health("w1", 7, serving={"echo": True})  # no registration any more

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == [("delete", HEALTH_W1)]
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == []


async def test_a_drained_worker_leaves_every_set_but_stays_probed_and_fed(
    cluster: Cluster,
) -> None:
    await cluster.subscribe("echo", "bert")
    cluster.register("w1", "echo", "bert")
    cluster.register("w2", "echo")
    await cluster.settle("w1", "w2")
    cluster.drain("w1")  # the admin's write, as the desired-state informer reads it back

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []  # the reconciler obeys the intent; it writes nothing
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == []
    assert await cluster.members("echo") == ["w2"]
    assert await cluster.members("bert") == []


async def test_an_undrained_worker_rejoins_its_sets(cluster: Cluster) -> None:
    await cluster.subscribe("echo")
    cluster.register("w1", "echo")
    cluster.register("w2", "echo")
    cluster.drain("w1")
    await cluster.settle("w1", "w2")
    cluster.undrain("w1")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == []
    assert await cluster.members("echo") == ["w1", "w2"]


async def test_a_model_that_stops_serving_leaves_its_own_set_and_returns_when_it_serves(
    cluster: Cluster,
) -> None:
    await cluster.subscribe("echo", "bert")
    registration = cluster.register("w1", "echo", "bert")
    await cluster.settle("w1")

    cluster.record_health("w1", registration, serving={"echo": False, "bert": True})
    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == []
    assert await cluster.members("echo") == []
    assert await cluster.members("bert") is None  # still serving: no new set

    cluster.record_health("w1", registration, serving={"echo": True, "bert": True})
    await cluster.reconciler.reconcile("w1")
    assert await cluster.members("echo") == ["w1"]


async def test_an_unreachable_worker_leaves_every_set(cluster: Cluster) -> None:
    await cluster.subscribe("echo", "bert")
    registration = cluster.register("w1", "echo", "bert")
    await cluster.settle("w1")
    cluster.record_health("w1", registration, reachable=False)

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []  # the prober keeps trying: that is how it returns
    assert await cluster.members("echo") == []
    assert await cluster.members("bert") == []


async def test_health_of_an_earlier_registration_does_not_count_and_the_probe_restarts(
    cluster: Cluster,
) -> None:
    await cluster.subscribe("echo")
    first = cluster.register("w1", "echo")
    cluster.record_health("w1", first, reachable=False)  # the old process died
    await cluster.settle("w1")
    second = cluster.register("w1", "echo")  # restarted: a new lease, same id and address

    await cluster.reconciler.reconcile("w1")

    assert second != first
    assert cluster.store.take() == []  # the new probe's first result replaces the record
    assert cluster.probers.take() == [("stop", "w1"), ("start", "w1", second)]
    assert cluster.feeds.take() == []  # same address: the feed carries on
    assert await cluster.members("echo") == ["w1"]  # counts as serving until probed


async def test_a_follower_feeds_load_but_never_probes(cluster: Cluster) -> None:
    await cluster.subscribe("echo")
    cluster.leader = False
    cluster.register("w1", "echo", address="w1.local:7000")

    await cluster.reconciler.reconcile("w1")

    assert cluster.store.take() == []
    assert cluster.probers.take() == []
    assert cluster.feeds.take() == [("start", "w1", "w1.local:7000")]
    assert await cluster.members("echo") == ["w1"]


async def test_a_replica_that_loses_leadership_stops_probing_and_one_that_gains_it_starts(
    cluster: Cluster,
) -> None:
    registration = cluster.register("w1", "echo")
    await cluster.settle("w1")

    cluster.leader = False
    await cluster.reconciler.reconcile("w1")
    assert cluster.probers.take() == [("stop", "w1")]

    cluster.leader = True
    await cluster.reconciler.reconcile("w1")
    assert cluster.probers.take() == [("start", "w1", registration)]
    assert cluster.feeds.take() == []
    assert cluster.store.take() == []


async def test_a_worker_that_drops_a_model_leaves_that_models_set(cluster: Cluster) -> None:
    await cluster.subscribe("echo", "bert")
    registration = cluster.register("w1", "echo", "bert")
    await cluster.settle("w1")
    cluster.update("w1", "echo")  # same lease, fewer models

    await cluster.reconciler.reconcile("w1")

    # the prober watches one stream per model, so it restarts for the new list
    assert cluster.probers.take() == [("stop", "w1"), ("start", "w1", registration)]
    assert cluster.feeds.take() == []
    assert await cluster.members("bert") == []
    assert await cluster.members("echo") is None


async def test_a_worker_that_moved_gets_a_feed_at_its_new_address(cluster: Cluster) -> None:
    cluster.register("w1", "echo", address="old.local:7000")
    await cluster.settle("w1")
    cluster.register("w1", "echo", address="new.local:7000")

    await cluster.reconciler.reconcile("w1")

    assert cluster.feeds.take() == [("stop", "w1"), ("start", "w1", "new.local:7000")]


async def test_a_failed_write_fails_the_reconcile_so_the_queue_retries_it(
    cluster: Cluster,
) -> None:
    cluster.record_health("w1", 7)
    cluster.store.failure = ConnectionError("etcd away")

    with pytest.raises(ConnectionError):
        await cluster.reconciler.reconcile("w1")

    cluster.store.failure = None
    await cluster.reconciler.reconcile("w1")
    assert cluster.store.take() == [("delete", HEALTH_W1)]
