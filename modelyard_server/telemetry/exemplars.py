"""Latency histograms whose buckets point at a trace: the current trace id as exemplar.

Prometheus naming, as every modelyard metric follows it: `modelyard_<service>_<what>`, the
unit last and in base units (`_seconds`, `_bytes`), counters ending in `_total` (the
client library appends it to a Counter's name), no unit on plain counts (`_batch_size`).

    latency = seconds_histogram(
        "modelyard_composer_node_seconds", "Node latency.", ["graph", "node"], registry
    )
    observe(latency.labels(graph, node), elapsed)

Exemplars appear only in the OpenMetrics exposition, which Prometheus asks for
(`modelyard_server.metrics_http`); a scrape stores them with --enable-feature=exemplar-storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Histogram

from modelyard_server.telemetry.spans import current_trace_id


def observe(histogram: Histogram, value: float) -> None:
    """Observes `value`, with the current trace id as exemplar when the current span is
    sampled (an exemplar pointing at a trace nobody recorded would only mislead)."""
    trace_id = current_trace_id()
    histogram.observe(value, exemplar={"trace_id": trace_id} if trace_id else None)


def seconds_histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    registry: CollectorRegistry,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> Histogram:
    """A latency histogram; its name must carry the unit (`_seconds`)."""
    if not name.endswith("_seconds"):
        raise ValueError(f"{name}: a latency histogram's name ends in _seconds")
    return Histogram(name, documentation, labelnames, registry=registry, buckets=buckets)
