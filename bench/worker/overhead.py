"""serving_overhead: the Echo model through Predict vs a bare grpc.aio echo server.

Both servers send byte-identical responses (bench/worker/echo_server.py), so whatever the
worker spends beyond the bare server is its serving overhead. Levels c=1 and c=16 run
`rounds` alternating rounds; one round of c=16 over 4 channels checks that one HTTP/2
connection is not what limits the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.servers import Program, Server, serving, worker, write_worker_config
from bench.common.stats import alternate, clean, ratio
from bench.worker.models import ECHO_INPUTS, ECHO_MODEL
from bench.worker.run import Run, load_spec

LEVELS = (Level(1, 2000, 300), Level(16, 10000, 1000))
MULTI_CHANNELS = 4
ECHO_SERVER = Program("bench.worker.echo_server")
BASELINE_NAME = "bare grpc.aio echo server (bench/worker/echo_server.py)"


def overhead(run: Run) -> None:
    config = write_worker_config(run.workdir / "echo-worker.yaml", ECHO_MODEL)
    single, concurrent = (run.level(level) for level in LEVELS)
    with (
        serving("echo-server", ECHO_SERVER, run.workdir) as echo,
        serving("echo-worker", worker(config), run.workdir) as served,
    ):
        targets = {"worker": served, "baseline": echo}
        c1 = rounds_of(run, targets, single, 1, run.rounds)
        c16 = rounds_of(run, targets, concurrent, 1, run.rounds)
        multi = rounds_of(run, targets, concurrent, MULTI_CHANNELS, 1)
    run.recorder.emit(c1_record(c1))
    run.recorder.emit(c16_record(c16, concurrent, 1))
    run.recorder.emit(c16_record(multi, concurrent, MULTI_CHANNELS))


def rounds_of(
    run: Run, targets: dict[str, Server], level: Level, channels: int, rounds: int
) -> dict[str, dict[str, Any]]:
    def measure(server: Server) -> Callable[[], dict[str, Any]]:
        spec = load_spec(server, "echo", ECHO_INPUTS, level, expect_echo=True, channels=channels)
        return lambda: run.quiet.measure(lambda: run_load(spec))

    return alternate({name: measure(server) for name, server in targets.items()}, rounds)


def ratios(worker: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    return {
        "p50": ratio(worker["p50_ms"], baseline["p50_ms"]),
        "p99": ratio(worker["p99_ms"], baseline["p99_ms"]),
        "throughput": ratio(worker["throughput_rps"], baseline["throughput_rps"]),
        "server_cpu_per_req": ratio(
            worker["server_cpu_ms_per_req"], baseline["server_cpu_ms_per_req"]
        ),
    }


def c1_record(result: dict[str, dict[str, Any]]) -> dict[str, Any]:
    worker, baseline = result["worker"], result["baseline"]
    found = ratios(worker, baseline)
    checks = {
        "p50 <= 0.5 ms": worker["p50_ms"] <= 0.5,
        "p50 <= 1.3x baseline p50": (found["p50"] or float("inf")) <= 1.3,
        "no errors": clean(worker) and clean(baseline),
    }
    return {
        "bench": "serving_overhead",
        "scenario": "Echo via Predict, c=1, 1 channel",
        "concurrency": 1,
        "channels": 1,
        "worker": worker,
        "baseline": {"name": BASELINE_NAME, **baseline},
        "ratios": found,
        "goal": "worker p50 <= 0.5 ms and <= 1.3x the echo server's p50",
        "checks": checks,
        "pass": all(checks.values()),
    }


def c16_record(result: dict[str, dict[str, Any]], level: Level, channels: int) -> dict[str, Any]:
    worker, baseline = result["worker"], result["baseline"]
    checks = {"no errors": clean(worker) and clean(baseline)}
    goal = "informational: is one channel the client's bottleneck? (pass = no errors)"
    if channels == 1:
        goal = "worker >= 3000 req/s at c=16"
        checks["throughput >= 3000 req/s"] = worker["throughput_rps"] >= 3000
    return {
        "bench": "serving_overhead",
        "scenario": f"Echo via Predict, c={level.concurrency}, {channels} channel(s)",
        "concurrency": level.concurrency,
        "channels": channels,
        "worker": worker,
        "baseline": {"name": BASELINE_NAME, **baseline},
        "ratios": ratios(worker, baseline),
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }
