"""controlplane_balancing: three SlowEcho replicas, one 10x slower than the other two.

16 closed-loop callers share one RoutedClient (one balancer) in one client process. The
ideal is the same load with selector `speed=fast`, i.e. only the two fast replicas,
measured with round robin (for two identical FIFO replicas the best any balancer can do)
and with p2c; the goal compares p2c over all three with the better p99 of the two.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from bench.common.cpu import CpuWindow
from bench.common.load.driver import Level, result_of, start_load
from bench.common.metrics import batch_sizes
from bench.common.quiet import DISTURBED_PCT
from bench.common.servers import Server
from bench.common.stats import ratio
from bench.controlplane.follower import SetFollower
from bench.controlplane.run import (
    Run,
    Worker,
    WorkerSpec,
    control_plane,
    require_members,
    start_workers,
)
from modelyard_cli.etcd_server import EtcdServer

MODEL = "slow"
FAST_MS, SLOW_MS = 5.0, 50.0
WORKERS = [
    WorkerSpec("fast-1", FAST_MS, {"speed": "fast"}),
    WorkerSpec("fast-2", FAST_MS, {"speed": "fast"}),
    WorkerSpec("slow-1", SLOW_MS, {"speed": "slow"}),
]
# 2,000 requests take 5-9 s at 230-400 req/s; round robin sends a third of the calls to a
# replica that serves 20/s, so it hits the time cap instead.
LEVEL = Level(16, 2000, 300, 12.0)
# name -> (policy, selector)
VARIANTS = {
    "ideal_round_robin": ("round_robin", "speed=fast"),
    "ideal_p2c": ("p2c", "speed=fast"),
    "p2c": ("p2c", ""),
    "round_robin": ("round_robin", ""),
    "least_loaded": ("least_loaded", ""),
}
GOAL_VARIANTS = ("ideal_round_robin", "p2c")  # repeated for --rounds
# Round robin's answer is clear within seconds (a third of the calls wait on 50 ms x a queue).
TIME_CAPS_S = {"round_robin": 8.0}
P99_GOAL_RATIO = 1.5
CLIENT_BOUND_PCT = 85.0  # of one core: above this the client process would limit the load


async def balancing(run: Run) -> None:
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        cp = stack.enter_context(control_plane(etcd, run.workdir, "cp-balancing"))
        workers = await start_workers(stack, etcd, run.workdir, MODEL, WORKERS)
        async with SetFollower(cp.address, MODEL) as follower:
            await require_members(follower, set(workers), 30.0)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        for name in order(run.rounds):
            await run.calm()
            rounds[name].append(await variant(run, cp, workers, name))
    run.recorder.emit(record({name: merge_rounds(r) for name, r in rounds.items()}, run))


def order(rounds: int) -> list[str]:
    """The goal's variants run `rounds` times, in reverse order every other round, so drift
    in the machine's load hits them alike; the other policies are context and run once."""
    names: list[str] = []
    for index in range(rounds):
        names += GOAL_VARIANTS if index % 2 == 0 else GOAL_VARIANTS[::-1]
    return names + [name for name in VARIANTS if name not in GOAL_VARIANTS]


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the latency and rate figures; sums of the counts."""
    merged = dict(runs[0])
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "throughput_rps", "client_cpu_pct"):
        merged[key] = round(statistics.median(r[key] for r in runs), 2)
    for key in ("ok", "errors", "retries"):
        merged[key] = sum(r[key] for r in runs)
    merged["capped"] = any(r["capped"] for r in runs)
    merged["disturbed_rounds"] = sum(r["cpu"]["other_cpu_pct"] > DISTURBED_PCT for r in runs)
    merged["served"] = {w: sum(r["served"][w] for r in runs) for w in runs[0]["served"]}
    total = sum(merged["served"].values()) or 1
    merged["share_pct"] = {w: round(100.0 * n / total, 1) for w, n in merged["served"].items()}
    merged["rounds"] = [
        {k: r[k] for k in ("p50_ms", "p99_ms", "throughput_rps", "share_pct", "cpu")} for r in runs
    ]
    for key in ("cpu", "duration_s", "other_cpu_pct", "machine_cpu_pct"):
        merged.pop(key, None)  # per round in `rounds`: the window's figures, not the client's
    return merged


def served_counts(workers: dict[str, Worker]) -> dict[str, float]:
    """Model calls per worker so far (batch size 1: one call is one request)."""
    return {
        worker_id: batch_sizes(worker.metrics_port).get(MODEL, (0.0, 0.0))[1]
        for worker_id, worker in workers.items()
    }


async def variant(run: Run, cp: Server, workers: dict[str, Worker], name: str) -> dict[str, Any]:
    policy, selector = VARIANTS[name]
    level = run.level(LEVEL)
    spec = level.spec(
        kind="routed",
        control_planes=[cp.address],
        model=MODEL,
        policy=policy,
        selector=selector,
        server_pids=[cp.pid, *(w.server.pid for w in workers.values())],
    )
    spec["time_cap_s"] = min(level.time_cap_s, TIME_CAPS_S.get(name, level.time_cap_s))
    log_name = f"load-{name}-{time.monotonic_ns()}"  # one log per round
    child = await start_load(spec, run.workdir, log_name)
    window = CpuWindow({"controlplane": [cp.pid]})
    try:
        await child.next_event("started", 120.0)
        before, _ = served_counts(workers), window.start()
        result = await result_of(child, spec)
        cpu, after = window.stop(), served_counts(workers)
    finally:
        await child.stop()
    served = {w: int(after[w] - before[w]) for w in workers}
    total = sum(served.values()) or 1
    result.pop("retries_at", None)
    return {
        **result,
        "served": served,
        "share_pct": {w: round(100.0 * n / total, 1) for w, n in served.items()},
        "cpu": cpu,
    }


def record(results: dict[str, dict[str, Any]], run: Run) -> dict[str, Any]:
    ideal_name = min(("ideal_round_robin", "ideal_p2c"), key=lambda n: results[n]["p99_ms"])
    ideal, p2c = results[ideal_name], results["p2c"]
    limit = round(P99_GOAL_RATIO * ideal["p99_ms"], 2)
    busiest_client = max(r["client_cpu_pct"] for r in results.values())
    goal_runs = [results[name] for name in ("ideal_round_robin", "ideal_p2c", "p2c")]
    checks = {
        f"p2c p99 <= {P99_GOAL_RATIO}x ideal p99 ({limit} ms)": p2c["p99_ms"] <= limit,
        "no errors (p2c, ideals)": all(r["errors"] == 0 for r in goal_runs),
        "p2c and ideals not capped": not any(r["capped"] for r in goal_runs),
        f"client below {CLIENT_BOUND_PCT:g}% of a core": busiest_client < CLIENT_BOUND_PCT,
    }
    level = run.level(LEVEL)
    return {
        "bench": "controlplane_balancing",
        "scenario": (
            f"3 SlowEcho workers unbatched: 2 x {FAST_MS:g} ms, 1 x {SLOW_MS:g} ms; "
            f"{level.concurrency} coroutines sharing one RoutedClient in one client process"
        ),
        "load": level.spec(),
        "variants": results,
        "baseline": (
            "ideal = the same load with selector speed=fast (only the two fast replicas), "
            "the better p99 of round robin and p2c there"
        ),
        "ideal": ideal_name,
        "ratios_to_ideal": {
            name: {
                "p50": ratio(r["p50_ms"], ideal["p50_ms"]),
                "p99": ratio(r["p99_ms"], ideal["p99_ms"]),
                "throughput": ratio(r["throughput_rps"], ideal["throughput_rps"]),
            }
            for name, r in results.items()
        },
        "client_cpu_pct_max": busiest_client,
        "goal": f"p2c p99 <= {P99_GOAL_RATIO}x the ideal's p99",
        "checks": checks,
        "pass": all(checks.values()),
    }
