"""Benchmarks of one modelyard worker, each against a baseline measured in the same run.

    python -m bench.worker_bench            # all scenarios, about 2 minutes on 2 cores
    python -m bench.worker_bench --only overhead --rounds 5

Scenarios (see bench/README.md):
  serving_overhead  the Echo model through Predict vs a bare grpc.aio echo server
  batching          tiny-bert-sentiment with dynamic batching on vs off
  peak_rss          one worker serving three tiny models vs a worker serving only Echo

Prints one JSON line per scenario to stdout and writes them all, with the machine's
description, to bench/results/worker.json. Servers and load generator are separate
processes on 127.0.0.1, ports are picked by the servers (port 0), and every request loop
is bounded by a request count and a time cap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.procs import (
    Quiet,
    RssSampler,
    Server,
    echo_server_command,
    free_port,
    run_load,
    scrape_batch_sizes,
    serving,
    worker_command,
    write_worker_config,
)

RESULTS = Path(__file__).resolve().parent / "results" / "worker.json"
SCENARIOS = ("overhead", "batching", "rss")
MB = 1024 * 1024

# A small payload of two kinds, so decoding and encoding Values is part of the cost.
ECHO_INPUTS = [{"text": "The quick brown fox", "x": 1.5}]
# Several texts of similar length: a batch is not N copies of one string, and padding
# stays comparable between batched and unbatched runs.
SENTIMENT_INPUTS = [
    {"text": "I loved this movie, it was wonderful and moving."},
    {"text": "The service was slow and the waiter was rude."},
    {"text": "The food at the restaurant was delicious."},
    {"text": "This film was terrible and boring, I hated it."},
]
NLI_INPUTS = [
    {"text": t["text"], "candidate_labels": ["sports", "politics", "business"]}
    for t in SENTIMENT_INPUTS
]
GPT2_INPUTS = [{"text": "The weather is"}, {"text": "Once upon a time"}]


@dataclass(frozen=True)
class Level:
    """One load level: concurrency and bounded request counts."""

    concurrency: int
    requests: int
    warmup: int
    time_cap_s: float = 20.0
    channels: int = 1


@dataclass
class Run:
    workdir: Path
    rounds: int
    quiet: Quiet = field(default_factory=Quiet)
    records: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        self.records.append(record)


def load_spec(
    server: Server, model: str, inputs: list[dict[str, Any]], level: Level, **extra: Any
) -> dict[str, Any]:
    return {
        "address": server.address,
        "model": model,
        "inputs": inputs,
        "concurrency": level.concurrency,
        "requests": level.requests,
        "warmup": level.warmup,
        "time_cap_s": level.time_cap_s,
        "channels": level.channels,
        "server_pid": server.pid,
        **extra,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (robust to a round disturbed by other work on the machine)."""
    keys = (
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "throughput_rps",
        "server_cpu_ms_per_req",
        "server_cpu_pct",
        "client_cpu_pct",
        "machine_cpu_pct",
        "other_cpu_pct",
    )
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
    out["throughput_rps_rounds"] = [r["throughput_rps"] for r in runs]
    out["p50_ms_rounds"] = [r["p50_ms"] for r in runs]
    out["ok"] = sum(r["ok"] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    out["capped"] = any(r["capped"] for r in runs)
    out["disturbed_rounds"] = sum(r["disturbed"] for r in runs)
    if "mean_batch_size" in runs[0]:
        out["mean_batch_size"] = statistics.median(r["mean_batch_size"] for r in runs)
        out["model_calls"] = sum(r["model_calls"] for r in runs)
    out["attempts"] = sum(r["attempts"] for r in runs)
    return out


def clean(result: dict[str, Any]) -> bool:
    """Every request answered OK and no level hit its time cap."""
    return result["errors"] == 0 and not result["capped"]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None  # None, not NaN: NaN is not JSON


# -- machine ------------------------------------------------------------------------------


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    # Other work on the machine skews every figure: record how busy it was before we began
    # (percent of the whole machine; per-measurement figures are in percent of one core).
    busy = psutil.cpu_percent(interval=1.0)
    return {
        "bench": "machine",
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions("torch", "transformers", "grpcio", "protobuf", "modelyard"),
        "background_cpu_pct_before": busy,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# -- 1. serving overhead ------------------------------------------------------------------

OVERHEAD_LEVELS = (Level(1, 2000, 300), Level(16, 10000, 1000))
MULTI_CHANNEL = Level(16, 10000, 1000, channels=4)
ECHO_MODEL = [{"name": "echo", "class": "tests.support.models:Echo"}]


def overhead(run: Run) -> None:
    config = write_worker_config(run.workdir / "echo-worker.yaml", ECHO_MODEL)
    with (
        serving("echo-server", echo_server_command(), run.workdir) as echo,
        serving("echo-worker", worker_command(config), run.workdir) as worker,
    ):
        targets = {"worker": worker, "baseline": echo}
        per_level = {
            level: overhead_rounds(run, targets, level, run.rounds) for level in OVERHEAD_LEVELS
        }
        # One round with 4 connections: does one HTTP/2 connection limit the client?
        multi = overhead_rounds(run, targets, MULTI_CHANNEL, 1)
    single, concurrent = (per_level[level] for level in OVERHEAD_LEVELS)
    run.emit(overhead_c1_record(single))
    run.emit(overhead_c16_record(concurrent, OVERHEAD_LEVELS[1]))
    run.emit(overhead_c16_record(multi, MULTI_CHANNEL))


def alternate(
    measures: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, dict[str, Any]]:
    """Runs each measurement `rounds` times, reversing the order every round so drift in
    the machine's load hits all alike; returns each one's medians."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    for round_index in range(rounds):
        order = list(measures) if round_index % 2 == 0 else list(reversed(measures))
        for name in order:
            results[name].append(measures[name]())
    return {name: summary(runs) for name, runs in results.items()}


def overhead_rounds(
    run: Run, targets: dict[str, Server], level: Level, rounds: int
) -> dict[str, dict[str, Any]]:
    def measure(server: Server) -> Callable[[], dict[str, Any]]:
        spec = load_spec(server, "echo", ECHO_INPUTS, level, expect_echo=True)
        return lambda: run.quiet.run_load(spec)

    return alternate({name: measure(server) for name, server in targets.items()}, rounds)


def overhead_ratios(worker: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    return {
        "p50": ratio(worker["p50_ms"], baseline["p50_ms"]),
        "p99": ratio(worker["p99_ms"], baseline["p99_ms"]),
        "throughput": ratio(worker["throughput_rps"], baseline["throughput_rps"]),
        "server_cpu_per_req": ratio(
            worker["server_cpu_ms_per_req"], baseline["server_cpu_ms_per_req"]
        ),
    }


def overhead_c1_record(result: dict[str, Any]) -> dict[str, Any]:
    worker, baseline = result["worker"], result["baseline"]
    ratios = overhead_ratios(worker, baseline)
    checks = {
        "p50 <= 0.5 ms": worker["p50_ms"] <= 0.5,
        "p50 <= 1.3x baseline p50": (ratios["p50"] or float("inf")) <= 1.3,
        "no errors": clean(worker) and clean(baseline),
    }
    return {
        "bench": "serving_overhead",
        "scenario": "Echo via Predict, c=1, 1 channel",
        "concurrency": 1,
        "channels": 1,
        "worker": worker,
        "baseline": {"name": "bare grpc.aio echo server (bench/echo_server.py)", **baseline},
        "ratios": ratios,
        "goal": "worker p50 <= 0.5 ms and <= 1.3x the echo server's p50",
        "checks": checks,
        "pass": all(checks.values()),
    }


def overhead_c16_record(result: dict[str, Any], level: Level) -> dict[str, Any]:
    worker, baseline = result["worker"], result["baseline"]
    checks = {"no errors": clean(worker) and clean(baseline)}
    goal = "informational: is one channel the client's bottleneck? (pass = no errors)"
    if level.channels == 1:
        goal = "worker >= 3000 req/s at c=16"
        checks["throughput >= 3000 req/s"] = worker["throughput_rps"] >= 3000
    return {
        "bench": "serving_overhead",
        "scenario": f"Echo via Predict, c={level.concurrency}, {level.channels} channel(s)",
        "concurrency": level.concurrency,
        "channels": level.channels,
        "worker": worker,
        "baseline": {"name": "bare grpc.aio echo server (bench/echo_server.py)", **baseline},
        "ratios": overhead_ratios(worker, baseline),
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


# -- 2. batching --------------------------------------------------------------------------

BATCHING_LEVELS = (Level(1, 300, 50), Level(8, 1000, 200), Level(32, 2000, 400))
BATCH_ON = {"max_batch_size": 32, "max_wait_ms": 2}
BATCH_OFF = {"max_batch_size": 1}
GOAL_CONCURRENCY = 32


def build_checkpoints(root: Path) -> dict[str, Path]:
    """The tiny checkpoints, built in a child process so this one never imports torch."""
    subprocess.run(
        [sys.executable, "-m", "tools.tiny_models", str(root)],
        cwd=Path(__file__).resolve().parents[1],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def sentiment_model(name: str, source: Path, batching: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "source": str(source),
        "task": "text-classification",
        "batching": batching,
    }


def batching(run: Run, checkpoints: dict[str, Path]) -> None:
    source = checkpoints["tiny-bert-sentiment"]
    metrics_port = free_port()
    # Both variants live in one worker, each on its own model thread; only one is loaded
    # at a time, so they never compete for the CPU.
    models = [
        sentiment_model("sentiment-batched", source, BATCH_ON),
        sentiment_model("sentiment-unbatched", source, BATCH_OFF),
    ]
    config = write_worker_config(run.workdir / "batching.yaml", models, metrics_port=metrics_port)
    with serving("batching-worker", worker_command(config), run.workdir) as worker:
        for level in BATCHING_LEVELS:
            # the goal's level gets the rounds; the others are context
            rounds = run.rounds if level.concurrency == GOAL_CONCURRENCY else 1
            measures = {
                name: batching_measure(run, worker, name, level, metrics_port)
                for name in ("sentiment-unbatched", "sentiment-batched")
            }
            results = alternate(measures, rounds)
            run.emit(
                batching_record(level, results["sentiment-batched"], results["sentiment-unbatched"])
            )


def batching_measure(
    run: Run, server: Server, model: str, level: Level, metrics_port: int
) -> Callable[[], dict[str, Any]]:
    def measure() -> dict[str, Any]:
        before = scrape_batch_sizes(metrics_port).get(model, (0.0, 0.0))
        result = run.quiet.run_load(load_spec(server, model, SENTIMENT_INPUTS, level))
        after = scrape_batch_sizes(metrics_port).get(model, (0.0, 0.0))
        calls = after[1] - before[1]
        # Over warm-up and measured phase alike (and any repeated attempt): all ran at
        # this level's concurrency.
        result["mean_batch_size"] = round((after[0] - before[0]) / calls, 2) if calls else 0.0
        result["model_calls"] = int(calls)
        return result

    return measure


def batching_record(
    level: Level, batched: dict[str, Any], unbatched: dict[str, Any]
) -> dict[str, Any]:
    gain = ratio(batched["throughput_rps"], unbatched["throughput_rps"])
    checks = {"no errors": clean(batched) and clean(unbatched)}
    goal = "informational (pass = no errors)"
    if level.concurrency == GOAL_CONCURRENCY:
        goal = ">= 3x throughput with batching on vs off at c=32"
        checks["throughput ratio >= 3"] = (gain or 0.0) >= 3.0
    return {
        "bench": "batching",
        "scenario": f"tiny-bert-sentiment text-classification, c={level.concurrency}",
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        "batched": {"config": BATCH_ON, **batched},
        "baseline": {"name": "batching off", "config": BATCH_OFF, **unbatched},
        "throughput_ratio": gain,
        "p50_ratio": ratio(batched["p50_ms"], unbatched["p50_ms"]),
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


# -- 3. peak RSS --------------------------------------------------------------------------

RSS_LEVEL = Level(4, 200, 20, time_cap_s=15.0)


def three_models(checkpoints: dict[str, Path]) -> list[dict[str, Any]]:
    return [
        sentiment_model("sentiment", checkpoints["tiny-bert-sentiment"], BATCH_ON),
        {
            "name": "nli",
            "source": str(checkpoints["tiny-bert-nli"]),
            "task": "zero-shot-classification",
        },
        {
            "name": "gpt2",
            "source": str(checkpoints["tiny-gpt2"]),
            "task": "text-generation",
            "parameters": {"max_new_tokens": 8},
        },
    ]


# model -> (inputs, requests): a short load on each, as a client mix would.
RSS_LOADS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "sentiment": (SENTIMENT_INPUTS, 200),
    "nli": (NLI_INPUTS, 100),
    "gpt2": (GPT2_INPUTS, 60),
    "echo": (ECHO_INPUTS, 200),
}


def rss_of(run: Run, name: str, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Starts a worker, samples its RSS from spawn through a short load on every model."""
    config = write_worker_config(run.workdir / f"{name}.yaml", models)
    loads: dict[str, Any] = {}
    with RssSampler() as sampler:
        command = worker_command(config)
        with serving(name, command, run.workdir, on_spawn=sampler.attach) as worker:
            ready_bytes = sampler.sample()
            for model in models:
                inputs, requests = RSS_LOADS[model["name"]]
                level = dataclasses.replace(RSS_LEVEL, requests=requests)
                loads[model["name"]] = run_load(load_spec(worker, model["name"], inputs, level))
            end_bytes = sampler.sample()
    return {
        "models": [m["name"] for m in models],
        "rss_ready_mb": round(ready_bytes / MB, 1),
        "rss_after_load_mb": round(end_bytes / MB, 1),
        "rss_peak_mb": round(sampler.peak_bytes / MB, 1),
        "rss_peak_main_process_mb": round(sampler.peak_main_bytes / MB, 1),
        "samples": sampler.samples,
        "load": {
            m: {k: r[k] for k in ("ok", "errors", "capped", "p50_ms", "throughput_rps")}
            for m, r in loads.items()
        },
        "errors": sum(r["errors"] for r in loads.values()),
        "capped": any(r["capped"] for r in loads.values()),
    }


def peak_rss(run: Run, checkpoints: dict[str, Path]) -> None:
    baseline = rss_of(run, "rss-echo-worker", ECHO_MODEL)
    measured = rss_of(run, "rss-three-models", three_models(checkpoints))
    checks = {"every model served its load": clean(measured) and clean(baseline)}
    run.emit(
        {
            "bench": "peak_rss",
            "scenario": "one worker: sentiment + nli zero-shot + tiny-gpt2 text-generation",
            "worker": measured,
            "baseline": {
                "name": "the same worker serving only Echo (framework + torch)",
                **baseline,
            },
            "models_delta_peak_mb": round(measured["rss_peak_mb"] - baseline["rss_peak_mb"], 1),
            "goal": "no RSS target set; informational (pass = every model served its load)",
            "checks": checks,
            "pass": all(checks.values()),
        }
    )


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of each goal level: Echo c=1 and c=16, batching c=32 (medians reported)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def run_scenarios(run: Run, only: Iterable[str]) -> None:
    only = set(only)
    if "overhead" in only:
        overhead(run)
    if only & {"batching", "rss"}:
        checkpoints = build_checkpoints(run.workdir / "models")
        steps: dict[str, Callable[[Run, dict[str, Path]], None]] = {
            "batching": batching,
            "rss": peak_rss,
        }
        for name, step in steps.items():
            if name in only:
                step(run, checkpoints)


def write_results(path: Path, machine: dict[str, Any], run: Run, started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "results": [r for r in run.records if r["bench"] != "machine"],
        "duration_s": round(time.monotonic() - started, 1),
        "background_cpu_pct_after": psutil.cpu_percent(interval=0.5),
        "all_pass": all(r["pass"] for r in run.records if "pass" in r),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        run = Run(Path(tmp), max(1, args.rounds))
        machine = machine_info()
        run.emit(machine)
        run_scenarios(run, args.only)
        write_results(args.output, machine, run, started)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
