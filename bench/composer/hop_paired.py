"""composer_hop_paired: the per-node goal with the three paths interleaved call by call.

`composer_hop` measures the composer, the relay and the direct chain in rounds of hundreds
of requests each, one path after the other. On this shared VM the same work's CPU drifts by
a third within a minute, so its CPU ratio (a difference of two whole-stack figures taken
seconds apart) moved from 0.77 to 1.26 between two runs of the same code. Here one client
(in the bench's process, at c=1) calls the three paths in turn, the order rotating each
iteration, so every path meets the same machine. Each process's CPU is read over the same
window:

- latency ratio: (composer p50 - direct chain p50) / 3, over one direct Predict (the direct
  chain's p50 / 3), as in `composer_hop`;
- CPU ratio: the composer process's CPU per node (its CPU / runs / 3) over a worker's CPU per
  Predict, read over a block of direct chains alone right after each round (the three
  workers' CPU / the Predicts they served). Within the round the workers also serve the
  composer's calls, which are PredictMany stream messages and cost them less than a unary
  Predict, so the round's own figure (`worker_cpu_all_paths_ms`, kept beside it) would
  understate what a client's Predict costs a worker.

The relay (bench/composer/relay_server.py) gets the same two figures: the floor. The verdict
is the median over rounds of each round's ratios. Two A/A stacks measured this way agreed
within 1.5% in every round, where alternating rounds of 800 requests differed by up to 12%.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from typing import Any

import psutil

from bench.common.cpu import process_cpu_seconds
from bench.common.interleaved import interleaved_round, warm_up
from bench.common.load.chain import open_chain
from bench.common.load.composer import open_run
from bench.common.load.spec import LoadSpec
from bench.common.stats import ratio
from bench.composer.hop import (
    GOAL_CPU_RATIO,
    GOAL_LATENCY_RATIO,
    GRAPH,
    HOPS,
    INPUTS,
    RELAY_NAME,
    within,
)

ROUNDS = 6
ITERATIONS = 400  # per round: each path called this many times
DIRECT_BLOCK = 200  # per round, after it: direct chains alone, for a worker's CPU per Predict
WARM_UP = 50
SMOKE_ROUNDS, SMOKE_ITERATIONS, SMOKE_WARM_UP, SMOKE_BLOCK = 2, 5, 2, 5
TIMEOUT_S = 30.0
PATHS = ("composer", "relay", "direct")


def paired(
    composer: str,
    relay: str,
    hops: Sequence[tuple[str, str]],
    pids: dict[str, int],
    *,
    smoke: bool,
) -> dict[str, Any]:
    """The record. `hops`: (worker address, model) in chain order; `pids`: "composer",
    "relay" and each worker address -> its process id."""
    rounds, iterations, warm_up_calls, block = (
        (SMOKE_ROUNDS, SMOKE_ITERATIONS, SMOKE_WARM_UP, SMOKE_BLOCK)
        if smoke
        else (ROUNDS, ITERATIONS, WARM_UP, DIRECT_BLOCK)
    )
    measured = asyncio.run(
        _measure(composer, relay, hops, pids, rounds, iterations, warm_up_calls, block)
    )
    return record(measured, iterations)


async def _measure(
    composer: str,
    relay: str,
    hops: Sequence[tuple[str, str]],
    pids: dict[str, int],
    rounds: int,
    iterations: int,
    warm_up_calls: int,
    block: int,
) -> dict[str, Any]:
    # the load generator's own calls (bench/common/load): serialised once, raw bytes
    common: dict[str, Any] = {"inputs": [INPUTS], "expect": INPUTS, "deadline_s": TIMEOUT_S}
    targets = {
        "composer": await open_run(LoadSpec("run", address=composer, graph=GRAPH, **common)),
        "relay": await open_run(LoadSpec("run", address=relay, graph=GRAPH, **common)),
        "direct": await open_chain(LoadSpec("chain", hops=[[a, m] for a, m in hops], **common)),
    }
    try:
        sample = {name: await target.check() for name, target in targets.items()}  # untimed
        calls = {name: target.calls[0] for name, target in targets.items()}
        errors = dict.fromkeys(PATHS, 0)
        await warm_up(calls, PATHS, warm_up_calls)
        processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        per_round = []
        for _ in range(rounds):
            before = {name: process_cpu_seconds(p) for name, p in processes.items()}
            latencies = await interleaved_round(calls, PATHS, iterations, errors)
            cpu = {name: process_cpu_seconds(p) - before[name] for name, p in processes.items()}
            workers = [p for name, p in processes.items() if name not in ("composer", "relay")]
            before_block = sum(map(process_cpu_seconds, workers))
            alone = await interleaved_round(calls, ("direct",), block, errors)
            workers_s = sum(map(process_cpu_seconds, workers)) - before_block
            direct = {"runs": len(alone["direct"]), "workers_cpu_s": workers_s}
            per_round.append({"latencies": latencies, "cpu_s": cpu, "direct_block": direct})
        return {"rounds": per_round, "errors": errors, "sample": sample}
    finally:
        for target in targets.values():
            await target.close()


def round_figures(
    latencies: dict[str, list[float]], cpu_s: dict[str, float], direct_block: dict[str, float]
) -> dict[str, Any]:
    """One round's per-node figures of the composer and of the relay; `direct_block`: the
    runs of the direct chains alone after it, and the workers' CPU over them."""
    nodes = len(HOPS)
    p50_ms = {name: 1000 * statistics.median(values) for name, values in latencies.items()}
    workers_s = sum(s for name, s in cpu_s.items() if name not in ("composer", "relay"))
    predicts = nodes * sum(len(values) for values in latencies.values())
    all_paths_ms = 1000 * workers_s / predicts
    worker_ms = 1000 * direct_block["workers_cpu_s"] / (nodes * direct_block["runs"])
    direct_ms = p50_ms["direct"] / nodes
    figures: dict[str, Any] = {
        "direct_predict_p50_ms": round(direct_ms, 4),
        "worker_cpu_per_predict_ms": round(worker_ms, 4),
        "worker_cpu_all_paths_ms": round(all_paths_ms, 4),
    }
    for name in ("composer", "relay"):
        added_ms = (p50_ms[name] - p50_ms["direct"]) / nodes
        cpu_ms = 1000 * cpu_s[name] / (nodes * len(latencies[name]))
        figures[name] = {
            "added_latency_p50_ms": round(added_ms, 4),
            "latency_ratio": ratio(added_ms, direct_ms),
            "cpu_ms_per_node": round(cpu_ms, 4),
            "cpu_ratio": ratio(cpu_ms, worker_ms),
        }
    return figures


def record(measured: dict[str, Any], iterations: int) -> dict[str, Any]:
    # a round where a path answered nothing has no figures (its errors fail the verdict)
    answered = [
        r for r in measured["rounds"] if all(r["latencies"].values()) and r["direct_block"]["runs"]
    ]
    rounds = [round_figures(r["latencies"], r["cpu_s"], r["direct_block"]) for r in answered]

    def median(path: str, key: str) -> float | None:
        return _median([r[path][key] for r in rounds if r[path][key] is not None])

    summary = {
        path: {
            key: median(path, key)
            for key in ("added_latency_p50_ms", "latency_ratio", "cpu_ms_per_node", "cpu_ratio")
        }
        for path in ("composer", "relay")
    }
    latency, cpu = summary["composer"]["latency_ratio"], summary["composer"]["cpu_ratio"]
    expected = dict(INPUTS)
    checks = {
        "no errors": not any(measured["errors"].values()),
        "same outputs on every path": all(s == expected for s in measured["sample"].values()),
        f"latency ratio <= {GOAL_LATENCY_RATIO}": within(latency, GOAL_LATENCY_RATIO),
        f"cpu ratio <= {GOAL_CPU_RATIO}": within(cpu, GOAL_CPU_RATIO),
    }
    return {
        "bench": "composer_hop_paired",
        "scenario": "3 Echo models in sequence, c=1, composer / relay / direct interleaved",
        "concurrency": 1,
        "rounds": len(rounds),
        "iterations_per_round": iterations,
        "composer": {"name": "Composer.Run of a deployed 3-node graph", **summary["composer"]},
        "relay": {"name": RELAY_NAME, **summary["relay"]},
        "baseline": {
            "name": "the client calls the 3 workers itself, in sequence (same processes)",
            "direct_predict_p50_ms": _median([r["direct_predict_p50_ms"] for r in rounds]),
            "worker_cpu_per_predict_ms": _median([r["worker_cpu_per_predict_ms"] for r in rounds]),
            "worker_cpu_all_paths_ms": _median([r["worker_cpu_all_paths_ms"] for r in rounds]),
        },
        "latency_ratio_rounds": [r["composer"]["latency_ratio"] for r in rounds],
        "cpu_ratio_rounds": [r["composer"]["cpu_ratio"] for r in rounds],
        "direct_predict_p50_ms_rounds": [r["direct_predict_p50_ms"] for r in rounds],
        "worker_cpu_per_predict_ms_rounds": [r["worker_cpu_per_predict_ms"] for r in rounds],
        "floor": {
            "latency_goal_below_floor": not within(
                summary["relay"]["latency_ratio"], GOAL_LATENCY_RATIO
            ),
            "cpu_goal_below_floor": not within(summary["relay"]["cpu_ratio"], GOAL_CPU_RATIO),
        },
        "errors": measured["errors"],
        "goal": (
            f"per node at c=1, paths interleaved: added latency (p50) <= {GOAL_LATENCY_RATIO}x "
            f"one direct Predict, composer CPU <= {GOAL_CPU_RATIO}x a worker's per direct "
            "Predict (medians over rounds)"
        ),
        "checks": checks,
        "pass": all(checks.values()),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
