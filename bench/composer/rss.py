"""composer_rss: RSS of every process of the stack at ready and sampled every 100 ms during
the graph scenario's modelyard rounds (peak, mean), BentoML's processes beside it.

Goal (issue 12): the whole local seed-graph stack holds no more than BentoML serving the
same graph, measured in the same run, and no more than the 1.4 GB the issue recorded for
BentoML. Peaks are compared: each system's largest sampled sum over its processes."""

from __future__ import annotations

from typing import Any

from bench.common.memory import MB, RssSampler
from bench.composer.stacks import StackProcs

NO_BASELINE = "smoke run: BentoML not started"
RECORDED_BENTOML_MB = 1400.0  # issue 12: BentoML's 5 processes for the seed graph


def rss_record(
    procs: StackProcs,
    stack_rss: RssSampler,
    bento_rss: RssSampler | None,
    at_ready: tuple[dict[str, int], dict[str, int]],
    ready_s: dict[str, float],
) -> dict[str, Any]:
    """`at_ready`: each process's RSS when both systems served, stack's then BentoML's."""
    stack_ready, bento_ready = at_ready
    stack = stack_rss.report()
    workers = procs.stack.spec()["workers"]
    models = sum(len(w.get("models", [])) for w in workers)
    baseline: dict[str, Any] = {"skipped": NO_BASELINE}
    if bento_rss is not None:
        baseline = {
            "at_ready_total_mb": round(sum(bento_ready.values()) / MB, 1),
            **bento_rss.report(),
            "ready_after_s": round(ready_s.get("bentoml", 0.0), 1),
        }
    checks = {
        "sampled during the load": stack["samples"] > 0,
        "peak <= 1.4 GB": stack["peak_total_mb"] <= RECORDED_BENTOML_MB,
    }
    if bento_rss is not None:
        checks["peak <= BentoML's peak"] = stack["peak_total_mb"] <= baseline["peak_total_mb"]
    return {
        "bench": "composer_rss",
        "scenario": f"whole modelyard stack ({procs.stack.stack_file.name}) during the graph "
        "scenario",
        "stack": {
            "processes": procs.pids,
            "at_ready_total_mb": round(sum(stack_ready.values()) / MB, 1),
            "at_ready_mb": {k: round(v / MB, 1) for k, v in stack_ready.items()},
            **stack,
            "ready_after_s": round(ready_s.get("modelyard", 0.0), 1),
        },
        "baseline": {
            "name": "BentoML serving the inference graph alone (4 services + bentoml serve)",
            **baseline,
        },
        "note": "RSS summed over processes counts shared pages (libtorch, Python) once per "
        f"process. The modelyard stack serves {models} models on {len(workers)} workers; "
        "BentoML serves only the graph's 3.",
        "goal": "the stack's peak RSS <= BentoML's in the same run and <= 1.4 GB (issue 12)",
        "checks": checks,
        "pass": all(checks.values()),
    }
