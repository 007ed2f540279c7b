"""Prometheus metrics of one worker, on a registry of its own (no process globals, so
several workers in one test process do not collide).

These are the worker's own: batches, queueing, work in flight. Calls by method, model and
status code, and their latency, are counted at the server edge on the same registry
(`modelyard_server.grpc_metrics`, as modelyard_worker_requests and
modelyard_worker_request_seconds).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


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
