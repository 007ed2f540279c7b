"""The control plane's Prometheus metrics, on the service's registry (beside the calls'
`modelyard_controlplane_requests_total` and `_request_seconds` from the server edge):

    modelyard_controlplane_endpoints{model}                   serving replicas of each model
    modelyard_controlplane_endpoint_subscribers               WatchEndpoints streams open
    modelyard_controlplane_health_transitions_total{model, to}  to: serving, not_serving
    modelyard_controlplane_leader                             1 while this replica leads
    modelyard_controlplane_leader_changes_total
    modelyard_controlplane_reconcile_seconds{result}          result: ok, error
    modelyard_controlplane_watch_restarts_total{informer}     etcd watches listed again

Everything is updated on the event loop, where the state it describes changes; a scrape
(on the /metrics thread) only reads the numbers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane.view import ClusterView
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.selectors import parse_selector
from modelyard_server.telemetry.exemplars import seconds_histogram
from modelyard_server.workerinfo import WorkerHealth

_EVERY_WORKER = parse_selector("")
_RECONCILE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


class ControlPlaneMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        view: ClusterView,
        subscribers: Callable[[], int],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`subscribers` is read at each scrape (a count: safe from another thread)."""
        self._view = view
        self._clock = clock
        self._endpoints = Gauge(
            "modelyard_controlplane_endpoints",
            "Replicas of each model in its endpoint set (serving, not drained).",
            ["model"],
            registry=registry,
        )
        Gauge(
            "modelyard_controlplane_endpoint_subscribers",
            "WatchEndpoints streams open on this replica.",
            registry=registry,
        ).set_function(subscribers)
        self._transitions = Counter(
            "modelyard_controlplane_health_transitions",
            "Changes of a model's probed health on a worker, by the state it changed to "
            "(counted by the leader, which probes).",
            ["model", "to"],
            registry=registry,
        )
        self._leader = Gauge(
            "modelyard_controlplane_leader",
            "1 while this replica is the leader (it probes workers), else 0.",
            registry=registry,
        )
        self._leader_changes = Counter(
            "modelyard_controlplane_leader_changes",
            "Times this replica gained or lost leadership.",
            registry=registry,
        )
        self._reconcile_seconds: Histogram = seconds_histogram(
            "modelyard_controlplane_reconcile_seconds",
            "Time one worker's reconcile took, by result.",
            ["result"],
            registry,
            buckets=_RECONCILE_BUCKETS,
        )
        self._watch_restarts = Counter(
            "modelyard_controlplane_watch_restarts",
            "Times an informer's etcd watch broke and it listed its prefix again.",
            ["informer"],
            registry=registry,
        )
        self._models: dict[str, set[str]] = {}  # worker id -> the models it registered
        self._health: dict[str, dict[str, bool]] = {}  # worker id -> model -> serving

    def timed(
        self, reconcile: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        """`reconcile`, timed by result, with the endpoint counts of the worker's models
        brought up to date after it (what it may have changed)."""

        async def timed_reconcile(worker_id: str) -> None:
            started = self._clock.now()
            result = "error"
            try:
                await reconcile(worker_id)
                result = "ok"
            finally:
                self._reconcile_seconds.labels(result).observe(self._clock.now() - started)
                self._count_endpoints(worker_id)

        return timed_reconcile

    def _count_endpoints(self, worker_id: str) -> None:
        """Recounts the models the worker serves and those it served before (a worker
        that left, or dropped a model, shrinks their sets)."""
        registered = self._view.registration(worker_id)
        before = self._models.pop(worker_id, set())
        if registered is None:
            self._health.pop(worker_id, None)
            current: set[str] = set()
        else:
            current = self._models[worker_id] = {m.name for m in registered.value.models}
        for model in current | before:
            self._endpoints.labels(model).set(len(self._view.endpoints(model, _EVERY_WORKER)))

    def health_listener(
        self, listener: Callable[[str, WorkerHealth], None]
    ) -> Callable[[str, WorkerHealth], None]:
        """`listener` (a prober's), counting each model whose serving state changed."""

        def counting(worker_id: str, health: WorkerHealth) -> None:
            before = self._health.get(worker_id, {})
            for model, serving in health.models.items():
                if before.get(model) != serving:
                    self._transitions.labels(model, "serving" if serving else "not_serving").inc()
            self._health[worker_id] = dict(health.models)
            listener(worker_id, health)

        return counting

    def leadership(self, leader: bool) -> None:
        self._leader.set(1 if leader else 0)
        self._leader_changes.inc()

    def watch_restarted(self, informer: str) -> None:
        """An informer's `on_restart`: counted under its name."""
        self._watch_restarts.labels(informer).inc()
