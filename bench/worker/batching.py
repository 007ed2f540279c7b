"""batching: tiny-bert-sentiment with dynamic batching off (the baseline) vs on.

One worker serves the checkpoint twice, `sentiment-unbatched` and `sentiment-batched`,
each on its own model thread; only one is under load at a time, so they never compete for
the CPU. The mean batch size is Δsum/Δcount of `modelyard_worker_batch_size` scraped from
the worker's /metrics around each measurement (warm-up included: same concurrency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.metrics import batch_sizes
from bench.common.servers import Server, serving, worker, write_worker_config
from bench.common.stats import alternate, clean, ratio
from bench.worker.models import BATCH_OFF, BATCH_ON, SENTIMENT_INPUTS, Checkpoints, sentiment_model
from bench.worker.run import Run, load_spec
from modelyard_cli.etcd_server import free_port

LEVELS = (Level(1, 300, 50), Level(8, 1000, 200), Level(32, 2000, 400))
GOAL_CONCURRENCY = 32
GOAL_RATIO = 3.0
VARIANTS = ("sentiment-unbatched", "sentiment-batched")


def batching(run: Run, checkpoints: Checkpoints) -> None:
    # The worker reports no bound metrics port, so pick a free one (a tiny race).
    metrics_port = free_port()
    models = [
        sentiment_model("sentiment-batched", checkpoints, BATCH_ON),
        sentiment_model("sentiment-unbatched", checkpoints, BATCH_OFF),
    ]
    config = write_worker_config(run.workdir / "batching.yaml", models, metrics_port=metrics_port)
    with serving("batching-worker", worker(config), run.workdir) as served:
        for level in map(run.level, LEVELS):
            measures = {name: measure(run, served, name, level, metrics_port) for name in VARIANTS}
            results = alternate(measures, run.rounds_at(level.concurrency == GOAL_CONCURRENCY))
            batched, unbatched = results["sentiment-batched"], results["sentiment-unbatched"]
            run.recorder.emit(record(level, batched, unbatched))


def measure(
    run: Run, server: Server, model: str, level: Level, metrics_port: int
) -> Callable[[], dict[str, Any]]:
    spec = load_spec(server, model, SENTIMENT_INPUTS, level)

    def once() -> dict[str, Any]:
        before = batch_sizes(metrics_port).get(model, (0.0, 0.0))
        result = run.quiet.measure(lambda: run_load(spec))
        after = batch_sizes(metrics_port).get(model, (0.0, 0.0))
        calls = after[1] - before[1]
        # over warm-up and measured phase alike (and any repeated attempt): all ran at
        # this level's concurrency
        result["mean_batch_size"] = round((after[0] - before[0]) / calls, 2) if calls else 0.0
        result["model_calls"] = int(calls)
        return result

    return once


def record(level: Level, batched: dict[str, Any], unbatched: dict[str, Any]) -> dict[str, Any]:
    concurrency = level.concurrency
    gain = ratio(batched["throughput_rps"], unbatched["throughput_rps"])
    checks = {"no errors": clean(batched) and clean(unbatched)}
    goal = "informational (pass = no errors)"
    if concurrency == GOAL_CONCURRENCY:
        goal = f">= {GOAL_RATIO:g}x throughput with batching on vs off at c={GOAL_CONCURRENCY}"
        checks[f"throughput ratio >= {GOAL_RATIO:g}"] = (gain or 0.0) >= GOAL_RATIO
    return {
        "bench": "batching",
        "scenario": f"tiny-bert-sentiment text-classification, c={concurrency}",
        "concurrency": concurrency,
        "requests_per_round": level.requests,
        "batched": {"config": BATCH_ON, **batched},
        "baseline": {"name": "batching off", "config": BATCH_OFF, **unbatched},
        "throughput_ratio": gain,
        "p50_ratio": ratio(batched["p50_ms"], unbatched["p50_ms"]),
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }
