"""composer_hop: the latency the composer adds per hop.

A stack of three workers each serving one Echo model (`echo1..3`, inline on the worker's
loop) and a deployed 3-node sequential graph. Target: `Composer.Run` of that graph;
baseline: the client calls the same three worker processes itself, in sequence, each
response's outputs copied into the next request. The composer path makes 4 RPCs where the
direct one makes 3, so the figure includes the client -> composer hop, shared by 3 nodes.

The goal at c=1 is machine-neutral (issue 12), both sides measured in the same run:
- latency: the latency added per node (p50) over one direct Predict round trip (the direct
  chain's p50 / 3), at most 0.5;
- CPU: what the composer path adds per node (the whole stack's CPU per graph through the
  composer minus per direct chain, / 3) over a worker's CPU per Predict (the stack's CPU
  per direct chain / 3; the idle composer, etcd and control plane count there too), at
  most 0.7.
The absolute figure (<= 0.5 ms added per hop, the goal of issue 4) is reported beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.common.load.driver import Level
from bench.common.stats import alternate, clean, ratio
from bench.composer.run import Run
from bench.composer.stacks import StackProcs

ECHO = "tests.support.models:Echo"
HOPS = (("echo-a", "echo1"), ("echo-b", "echo2"), ("echo-c", "echo3"))  # worker, model
INPUTS = {"text": "The quick brown fox"}
LEVELS = (Level(1, 800, 150), Level(16, 2000, 300))
GOAL_MS = 0.5  # issue 4's absolute goal, kept beside the machine-neutral ones
GOAL_LATENCY_RATIO = 0.5  # added latency per node / one direct Predict round trip (p50)
GOAL_CPU_RATIO = 0.7  # the composer's added CPU per node / a worker's CPU per Predict
GRAPH = "echo-chain"


def echo_chain_graph() -> dict[str, Any]:
    nodes = []
    source = "inputs.text"
    for index, (_, model) in enumerate(HOPS, 1):
        nodes.append({"name": f"e{index}", "model": model, "inputs": {"text": source}})
        source = f"e{index}.text"
    return {
        "name": GRAPH,
        "description": "three no-op models in sequence (bench.composer)",
        "inputs": {"text": "string"},
        "nodes": nodes,
        "outputs": {"text": source},
    }


def hop_workers() -> list[dict[str, Any]]:
    return [
        {"worker_id": worker, "models": [{"name": model, "class": ECHO}]} for worker, model in HOPS
    ]


def write_graph(folder: Path) -> Path:
    path = folder / f"{GRAPH}.yaml"
    path.write_text(yaml.safe_dump(echo_chain_graph(), sort_keys=False))
    return path


def write_stack(folder: Path) -> Path:
    """The hop scenario's own stack: three Echo workers and the echo chain."""
    folder.mkdir(parents=True, exist_ok=True)
    stack = {"workers": hop_workers(), "graphs": [str(write_graph(folder))]}
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def hop(run: Run, procs: StackProcs) -> None:
    pids = list(procs.pids.values())
    hops = [[procs.address_of(model), model] for _, model in HOPS]
    common = {"inputs": [INPUTS], "expect": INPUTS, "server_pids": pids}
    for level in LEVELS:
        at = run.level(level)
        composer = at.spec(kind="run", address=procs.composer, graph=GRAPH, **common)
        direct = at.spec(kind="chain", hops=hops, **common)
        # the goal's level (c=1, sub-millisecond differences) gets a round more
        rounds = run.rounds + 1 if level.concurrency == 1 and not run.smoke else run.rounds
        results = alternate(
            {"composer": run.measurer(composer), "direct": run.measurer(direct)}, rounds
        )
        run.recorder.emit(record(at, results["composer"], results["direct"], procs))
    if run.profile:
        from bench.composer.profile import profile_stack

        spec = LEVELS[-1].spec(
            kind="run", address=procs.composer, graph=GRAPH, inputs=[INPUTS], server_pids=pids
        )
        run.recorder.emit(profile_stack(procs, spec, run.workdir, GRAPH, seconds=6))


def record(
    level: Level, composer: dict[str, Any], direct: dict[str, Any], procs: StackProcs
) -> dict[str, Any]:
    nodes = len(HOPS)
    per_hop = {
        q: round((composer[f"{q}_ms"] - direct[f"{q}_ms"]) / nodes, 4)
        for q in ("p50", "p90", "p99")
    }
    direct_predict_ms = direct["p50_ms"] / nodes
    worker_cpu_ms = direct["server_cpu_ms_per_req"] / nodes
    composer_cpu_ms = (composer["server_cpu_ms_per_req"] - direct["server_cpu_ms_per_req"]) / nodes
    latency_ratio = ratio(per_hop["p50"], direct_predict_ms)
    cpu_ratio = ratio(composer_cpu_ms, worker_cpu_ms)
    per_node = {
        "added_latency_p50_ms": per_hop["p50"],
        "direct_predict_p50_ms": round(direct_predict_ms, 4),
        "latency_ratio": latency_ratio,
        "composer_cpu_ms": round(composer_cpu_ms, 4),
        "worker_cpu_per_predict_ms": round(worker_cpu_ms, 4),
        "cpu_ratio": cpu_ratio,
    }
    checks = {"no errors": clean(composer) and clean(direct)}
    goal = "informational (pass = no errors)"
    if level.concurrency == 1:
        goal = (
            f"per node at c=1: added latency (p50) <= {GOAL_LATENCY_RATIO}x one direct Predict "
            f"round trip, composer CPU <= {GOAL_CPU_RATIO}x a worker's per Predict"
        )
        checks[f"latency ratio <= {GOAL_LATENCY_RATIO}"] = within(latency_ratio, GOAL_LATENCY_RATIO)
        checks[f"cpu ratio <= {GOAL_CPU_RATIO}"] = within(cpu_ratio, GOAL_CPU_RATIO)
    return {
        "bench": "composer_hop",
        "scenario": f"3 Echo models in sequence, c={level.concurrency}",
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        "composer": {"name": "Composer.Run of a deployed 3-node graph", **composer},
        "baseline": {
            "name": "the client calls the 3 workers itself, in sequence (same processes)",
            **direct,
        },
        "added_per_hop_ms": per_hop,
        "per_node": per_node,
        # issue 4's absolute goal, informational: it moves with the machine's speed and load
        f"added_per_hop_p50_within_{GOAL_MS}_ms": per_hop["p50"] <= GOAL_MS,
        "throughput_ratio": ratio(composer["throughput_rps"], direct["throughput_rps"]),
        "server_cpu_ms_per_req_added": round(
            composer["server_cpu_ms_per_req"] - direct["server_cpu_ms_per_req"], 3
        ),
        "server_processes": procs.pids,
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


def within(value: float | None, goal: float) -> bool:
    return value is not None and value <= goal
