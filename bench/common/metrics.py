"""A worker's Prometheus /metrics, read: batch sizes and the in-flight gauge."""

from __future__ import annotations

import urllib.request

from bench.common.servers import HOST


def scrape(metrics_port: int) -> str:
    url = f"http://{HOST}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def batch_sizes(metrics_port: int) -> dict[str, tuple[float, float]]:
    """model -> (sum, count) of `modelyard_worker_batch_size` (count = model calls)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in scrape(metrics_port).splitlines():
        for suffix, target in (("_sum{", sums), ("_count{", counts)):
            prefix = f"modelyard_worker_batch_size{suffix}"
            if line.startswith(prefix):
                labels, value = line[len(prefix) :].rsplit("} ", 1)
                target[_label(labels, "model")] = float(value)
    return {model: (sums[model], counts.get(model, 0.0)) for model in sums}


def in_flight(metrics_port: int, model: str) -> int:
    """The worker's `modelyard_worker_in_flight` gauge for `model`."""
    prefix = f'modelyard_worker_in_flight{{model="{model}"}} '
    for line in scrape(metrics_port).splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return 0


def _label(labels: str, name: str) -> str:
    for pair in labels.split(","):
        key, _, value = pair.partition("=")
        if key == name:
            return value.strip('"')
    return ""
