"""batching: dynamic batching on vs off, for classification and for generation.

One worker serves each tiny checkpoint twice, batched (`BATCH_ON`) and unbatched
(`BATCH_OFF`, the baseline): tiny-bert-sentiment (text-classification) and tiny-gpt2
(text-generation, 16 new tokens). Each model has its own thread and only one is under load
at a time, so they never compete for the CPU; batched and unbatched alternate round by
round (A B, B A, ...) in the same run, c=1 in more and shorter rounds. The mean batch
size is Δsum/Δcount of `modelyard_worker_batch_size` scraped from the worker's /metrics
around each measurement (warm-up included: same concurrency).

Goals: at c=1, batching costs nothing (throughput >= 0.95x and p50 <= 1.05x of batching
off; for generation also the streamed time to first token); at c=32, classification
serves >= 4x. The other levels report the gain and the mean batch size. The c=1 throughput
and p50 verdict is `batching_idle_paired` (bench/worker/batching_paired.py), run after each
task's levels on the same worker: both models called in turn, call by call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.metrics import batch_sizes
from bench.common.servers import Server, serving, worker, write_worker_config
from bench.common.stats import alternate, clean, ratio
from bench.worker.batching_paired import paired
from bench.worker.batching_paired import record as paired_record
from bench.worker.models import (
    BATCH_OFF,
    BATCH_ON,
    GPT2_INPUTS,
    SENTIMENT_INPUTS,
    Checkpoints,
    generation_model,
    sentiment_model,
)
from bench.worker.run import Run, load_spec
from modelyard_cli.etcd_server import free_port

GOAL_CONCURRENCY = 32
GOAL_RATIO = 4.0
TTFT_LEVEL = Level(1, 60, 10)


def idle_rounds(rounds: int) -> int:
    """c=1 compares two figures meant to be equal, so a burst of other work in one long
    round would decide it: it runs more, shorter rounds (2 x --rounds + 1, an odd number so
    the median is a round that was measured)."""
    return 2 * rounds + 1


@dataclass(frozen=True)
class Task:
    """One task's pair of models, its payloads and levels, and the goal at its top level."""

    task: str
    checkpoint: str
    make_model: Callable[[str, Checkpoints, dict[str, Any]], dict[str, Any]]
    inputs: list[dict[str, Any]]
    levels: tuple[Level, ...]
    # the throughput ratio goal at GOAL_CONCURRENCY, if any
    busy_ratio: float | None = None
    # streamed too: the time to first token at c=1
    streams: bool = False
    # calls of each model per round of batching_idle_paired (c=1, interleaved)
    paired_iterations: int = 300

    @property
    def batched(self) -> str:
        return f"{self.task}-batched"

    @property
    def unbatched(self) -> str:
        return f"{self.task}-unbatched"

    def models(self, checkpoints: Checkpoints) -> list[dict[str, Any]]:
        return [
            self.make_model(self.batched, checkpoints, BATCH_ON),
            self.make_model(self.unbatched, checkpoints, BATCH_OFF),
        ]

    def is_goal(self, concurrency: int) -> bool:
        return concurrency == 1 or (concurrency == GOAL_CONCURRENCY and self.busy_ratio is not None)


TASKS = (
    Task(
        "text-classification",
        "tiny-bert-sentiment",
        sentiment_model,
        SENTIMENT_INPUTS,
        (Level(1, 500, 50), Level(8, 1000, 200), Level(32, 2000, 400)),
        busy_ratio=GOAL_RATIO,
        paired_iterations=300,
    ),
    Task(
        "text-generation",
        "tiny-gpt2",
        generation_model,
        GPT2_INPUTS,
        # unbatched, a generation at c=32 waits for 31 others (about 2 s): the default 20 s
        # cap would cut its 480 requests short on a busy machine and fail "no errors"
        (Level(1, 60, 10), Level(8, 240, 40, time_cap_s=45.0), Level(32, 480, 64, 60.0)),
        streams=True,
        paired_iterations=40,
    ),
)


def batching(run: Run, checkpoints: Checkpoints) -> None:
    # The worker reports no bound metrics port, so pick a free one (a tiny race).
    metrics_port = free_port()
    models = [model for task in TASKS for model in task.models(checkpoints)]
    config = write_worker_config(run.workdir / "batching.yaml", models, metrics_port=metrics_port)
    with serving("batching-worker", worker(config), run.workdir) as served:
        for task in TASKS:
            for level in map(run.level, task.levels):
                variants = (task.batched, task.unbatched)
                measures = {
                    name: measure(run, served, name, task.inputs, level, metrics_port)
                    for name in variants
                }
                results = alternate(measures, rounds_of(run, task, level))
                ttft = None
                if task.streams and level.concurrency == 1:
                    ttft = stream_ttft(run, served, task)
                record = level_record(task, level, results, ttft)
                run.recorder.emit(record)
            pair = {"batched": task.batched, "unbatched": task.unbatched}
            measured = paired(
                served.address,
                pair,
                task.inputs,
                task.paired_iterations,
                streams=task.streams,
                smoke=run.smoke,
            )
            run.recorder.emit(paired_record(measured, task=task.task, checkpoint=task.checkpoint))


def rounds_of(run: Run, task: Task, level: Level) -> int:
    rounds = run.rounds_at(task.is_goal(level.concurrency))
    return idle_rounds(rounds) if level.concurrency == 1 and not run.smoke else rounds


def measure(
    run: Run,
    server: Server,
    model: str,
    inputs: list[dict[str, Any]],
    level: Level,
    metrics_port: int,
) -> Callable[[], dict[str, Any]]:
    spec = load_spec(server, model, inputs, level)

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


def stream_ttft(run: Run, server: Server, task: Task) -> dict[str, Any]:
    """PredictStream at c=1 on both models, timed to the first message (p50_ms is the time
    to first token, total_p50_ms the whole stream)."""
    level = run.level(TTFT_LEVEL)
    measures = {
        name: stream_measure(run, server, name, task.inputs, level)
        for name in (task.batched, task.unbatched)
    }
    results = alternate(measures, rounds_of(run, task, level))
    batched, unbatched = results[task.batched], results[task.unbatched]
    return {
        "batched": batched,
        "baseline": unbatched,
        "ttft_p50_ratio": ratio(batched["p50_ms"], unbatched["p50_ms"]),
    }


def stream_measure(
    run: Run, server: Server, model: str, inputs: list[dict[str, Any]], level: Level
) -> Callable[[], dict[str, Any]]:
    spec = {**load_spec(server, model, inputs, level), "kind": "predict_stream"}
    return lambda: run.quiet.measure(lambda: run_load(spec))


def level_record(
    task: Task,
    level: Level,
    results: dict[str, dict[str, Any]],
    ttft: dict[str, Any] | None,
) -> dict[str, Any]:
    batched, unbatched = results[task.batched], results[task.unbatched]
    concurrency = level.concurrency
    gain = ratio(batched["throughput_rps"], unbatched["throughput_rps"])
    p50 = ratio(batched["p50_ms"], unbatched["p50_ms"])
    checks = {"no errors": clean(batched) and clean(unbatched)}
    goals = []
    if concurrency == 1:
        # rounds of one model after the other cannot resolve two equal figures on this VM:
        # the c=1 verdict (throughput, p50, time to first token) is batching_idle_paired's,
        # whose calls are interleaved
        goals.append("c=1: informational (pass = no errors), the verdict: batching_idle_paired")
    if ttft is not None:
        checks["no stream errors"] = clean(ttft["batched"]) and clean(ttft["baseline"])
    if concurrency == GOAL_CONCURRENCY and task.busy_ratio is not None:
        goals.append(f">= {task.busy_ratio:g}x throughput, batching on vs off, at c={concurrency}")
        checks[f"throughput ratio >= {task.busy_ratio:g}"] = at_least(gain, task.busy_ratio)
    record: dict[str, Any] = {
        "bench": "batching",
        "scenario": f"{task.checkpoint} {task.task}, c={concurrency}",
        "task": task.task,
        "concurrency": concurrency,
        "requests_per_round": level.requests,
        "batched": {"config": BATCH_ON, **batched},
        "baseline": {"name": "batching off", "config": BATCH_OFF, **unbatched},
        "throughput_ratio": gain,
        "p50_ratio": p50,
        "mean_batch_size": batched["mean_batch_size"],
        "goal": "; ".join(goals) or "informational (pass = no errors)",
        "checks": checks,
        "pass": all(checks.values()),
    }
    if ttft is not None:
        record["stream_ttft"] = ttft
    return record


def at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit  # None: no baseline figure to compare with
