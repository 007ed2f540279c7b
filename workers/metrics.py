"""Prometheus metrics of one worker, on a registry of its own (no process globals, so
several workers in one test process do not collide).

These are the worker's own: batches, queueing, work in flight, each model's load state.
Calls by method, model and status code, and their latency, are counted at the server edge
on the same registry (`modelyard_server.grpc_metrics`, as modelyard_worker_requests_total
and modelyard_worker_request_seconds, with trace-id exemplars).

    modelyard_worker_batch_size{model}           requests per model call
    modelyard_worker_queue_wait_seconds{model}   arrival to the start of its batch
    modelyard_worker_queue_depth{model}          waiting for a batch or the thread, + streams
    modelyard_worker_in_flight{model}            accepted, not yet answered
    modelyard_worker_model_state{model, state}   1 for the model's state (loading, ready,
                                                 failed), 0 for the others
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Every state a model can be in (workers.registry.ModelState's values).
MODEL_STATES = ("loading", "ready", "failed")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batch_size = Histogram(
            "modelyard_worker_batch_size",
            "Requests per model call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "modelyard_worker_queue_wait_seconds",
            "Time a request waited for its batch to start.",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "modelyard_worker_in_flight",
            "Calls accepted and not yet answered, by model.",
            ["model"],
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "modelyard_worker_queue_depth",
            "Requests waiting for a batch or the model's thread, plus open streams, by model.",
            ["model"],
            registry=self.registry,
        )
        self._model_state = Gauge(
            "modelyard_worker_model_state",
            "1 for the state each model is in (loading, ready, failed), 0 for the others.",
            ["model", "state"],
            registry=self.registry,
        )

    def watch_queue_depth(self, model: str, depth: Callable[[], int]) -> None:
        """`depth` is read at each scrape (a count: safe from the /metrics thread)."""
        self._queue_depth.labels(model).set_function(depth)

    def set_model_state(self, model: str, state: str) -> None:
        for each in MODEL_STATES:
            self._model_state.labels(model, each).set(1 if each == state else 0)
