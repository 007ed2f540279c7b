"""Figures from measurements: percentiles, latency summaries, medians over rounds, and
rounds that alternate target and baseline."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was really observed, no interpolation."""
    if not sorted_values:
        return 0.0  # no successful request: the error count says so
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(values_ms)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 2),
        "p90_ms": round(percentile(ordered, 90), 2),
        "p99_ms": round(percentile(ordered, 99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else 0.0,
        "mean_ms": round(statistics.fmean(ordered), 2) if ordered else 0.0,
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None  # None, not NaN: NaN is not JSON


def clean(result: dict[str, Any]) -> bool:
    """Every request answered and no measurement hit its time cap."""
    return result["errors"] == 0 and not result["capped"]


# Figures of a load result that rounds report as their median.
MEDIAN_KEYS = (
    "p50_ms", "p90_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_req",
    "server_cpu_pct", "client_cpu_pct", "machine_cpu_pct", "other_cpu_pct",
)  # fmt: skip
OPTIONAL_MEDIAN_KEYS = ("total_p50_ms", "total_p99_ms", "mean_batch_size")


def rounds_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (robust to a round disturbed by other work), counts summed,
    the per-round values beside them, the first round's checked sample."""
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 4) for k in MEDIAN_KEYS}
    for key in OPTIONAL_MEDIAN_KEYS:
        if key in runs[0]:
            out[key] = round(statistics.median(r[key] for r in runs), 4)
    out["throughput_rps_rounds"] = [r["throughput_rps"] for r in runs]
    out["p50_ms_rounds"] = [r["p50_ms"] for r in runs]
    out["p99_ms_rounds"] = [r["p99_ms"] for r in runs]
    for key in ("requests", "ok", "errors", "attempts", "model_calls"):
        if key in runs[0]:
            out[key] = sum(r[key] for r in runs)
    codes: dict[str, int] = {}
    for r in runs:
        for code, count in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + count
    out["error_codes"] = codes
    out["capped"] = any(r["capped"] for r in runs)
    out["disturbed_rounds"] = sum(bool(r.get("disturbed")) for r in runs)
    if "sample" in runs[0]:
        out["sample"] = runs[0]["sample"]
    return out


def alternate(
    measures: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, dict[str, Any]]:
    """Runs each measurement `rounds` times, reversing the order every round (A B, B A, ...)
    so drift in the machine's load hits all alike; returns each one's `rounds_summary`."""
    return {name: rounds_summary(runs) for name, runs in alternate_rounds(measures, rounds).items()}


def alternate_rounds(
    measures: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """`alternate`'s rounds themselves, each measurement's in order: round i of one was
    measured next to round i of the others."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    for index in range(rounds):
        order = list(measures) if index % 2 == 0 else list(reversed(measures))
        for name in order:
            results[name].append(measures[name]())
    return results


def paired_ratio(
    numerators: list[dict[str, Any]], denominators: list[dict[str, Any]], key: str
) -> dict[str, Any]:
    """The median of round-by-round ratios of `key`, with their range. On a machine whose
    speed drifts over seconds (a shared VM: the same work's CPU varies by a third), a ratio
    of two rounds measured side by side cancels the drift that a ratio of two medians
    taken over minutes keeps."""
    ratios = [n[key] / d[key] for n, d in zip(numerators, denominators, strict=True) if d[key] > 0]
    if not ratios:
        return {"median": None, "rounds": []}
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "rounds": [round(r, 3) for r in ratios],
    }
