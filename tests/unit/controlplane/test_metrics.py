"""The control plane's metrics (controlplane.metrics) over the real view and reconciler of
a network-free cluster: endpoint-set sizes after each reconcile, reconcile timing, health
transitions, leadership and watch restarts, read back from the registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from controlplane.metrics import ControlPlaneMetrics
from modelyard_server.workerinfo import WorkerHealth
from tests.support.clock import FakeClock
from tests.unit.controlplane.cluster import Cluster


class Measured:
    def __init__(self) -> None:
        self.cluster = Cluster()
        self.registry = CollectorRegistry()
        self.clock = FakeClock()
        self.metrics = ControlPlaneMetrics(
            self.registry, self.cluster.view, lambda: self.cluster.hub.subscribers, clock=self.clock
        )
        self.reconcile = self.metrics.timed(self.cluster.reconciler.reconcile)
        self.health: list[tuple[str, WorkerHealth]] = []
        self.listener = self.metrics.health_listener(lambda w, h: self.health.append((w, h)))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def endpoints(self, model: str) -> float | None:
        return self.value("modelyard_controlplane_endpoints", model=model)


async def test_endpoint_set_sizes_follow_each_reconcile() -> None:
    measured = Measured()
    cluster = measured.cluster
    cluster.register("w1", "gpt2", "bert")
    cluster.register("w2", "gpt2")
    await measured.reconcile("w1")
    await measured.reconcile("w2")
    assert (measured.endpoints("gpt2"), measured.endpoints("bert")) == (2, 1)
    cluster.drain("w2")
    await measured.reconcile("w2")
    assert measured.endpoints("gpt2") == 1
    cluster.update("w1", "gpt2")  # w1 no longer serves bert
    await measured.reconcile("w1")
    assert (measured.endpoints("gpt2"), measured.endpoints("bert")) == (1, 0)
    cluster.vanish("w1")
    await measured.reconcile("w1")
    assert measured.endpoints("gpt2") == 0


async def test_reconciles_are_timed_by_result() -> None:
    measured = Measured()
    cluster = measured.cluster
    registration = cluster.register("w1", "gpt2")
    await measured.reconcile("w1")
    cluster.record_health("w1", registration)
    cluster.vanish("w1")
    cluster.store.failure = RuntimeError("etcd went away")  # the leader's clean-up fails
    with pytest.raises(RuntimeError):
        await measured.reconcile("w1")
    seconds = "modelyard_controlplane_reconcile_seconds_count"
    assert measured.value(seconds, result="ok") == 1
    assert measured.value(seconds, result="error") == 1


def test_health_transitions_count_each_model_that_changed_state() -> None:
    measured = Measured()

    def probed(**models: bool) -> None:
        measured.listener("w1", WorkerHealth(reachable=True, models=models, registration=7))

    probed(gpt2=True, bert=True)  # first seen: both serving
    probed(gpt2=True, bert=False)
    probed(gpt2=False, bert=False)
    probed(gpt2=False, bert=False)  # no change: the prober reports nothing new
    transitions = "modelyard_controlplane_health_transitions_total"
    assert measured.value(transitions, model="gpt2", to="serving") == 1
    assert measured.value(transitions, model="gpt2", to="not_serving") == 1
    assert measured.value(transitions, model="bert", to="serving") == 1
    assert measured.value(transitions, model="bert", to="not_serving") == 1
    assert len(measured.health) == 4  # every report still reaches the recorder


def test_leadership_subscribers_and_watch_restarts() -> None:
    measured = Measured()
    assert measured.value("modelyard_controlplane_leader") == 0
    measured.metrics.leadership(True)
    assert measured.value("modelyard_controlplane_leader") == 1
    measured.metrics.leadership(False)
    assert measured.value("modelyard_controlplane_leader") == 0
    assert measured.value("modelyard_controlplane_leader_changes_total") == 2
    measured.metrics.watch_restarted("workers")
    measured.metrics.watch_restarted("workers")
    restarts = "modelyard_controlplane_watch_restarts_total"
    assert measured.value(restarts, informer="workers") == 2
    assert measured.value("modelyard_controlplane_endpoint_subscribers") == 0
