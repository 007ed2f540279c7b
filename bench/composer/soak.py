"""composer_soak: admission control at twice the composer's capacity (issue 11).

Two workers serve `slow` (SlowEcho: 40 ms a call, batching off, so each serves one call at
a time: the workers' capacity is 2 x 25 = 50 runs/s, less the serving overhead) and the
composer a one-node graph. Three stacks of that stack file run side by side, alike but for
the composer's `max_runs_in_flight` (set by MODELYARD_COMPOSER_MAX_RUNS_IN_FLIGHT):

    sized          fixed at 1.5 x the calls the workers serve at once (3): enough in flight
                   to keep the workers busy, and a run waits behind at most about one other
    default        unset, as an operator leaves it: sized by the composer from the workers'
                   capacity in the endpoint sets (composer.admission_limit; 3 here too)
    admission_off  1,000,000: nothing refused by the composer (finding 3's composer)

Measured first, on the `admission_off` stack: the unloaded p99 (closed loop, c=1) and the
capacity (closed loop at c = 4 x the workers' calls at once: the workers never idle).
Then, for each stack in turn (the others warmed up first: c=2, closed loop, nothing
refused), an open-loop load (`bench.common.load.open_loop`): twice the capacity for 60 s,
then a probe at a quarter of it for 10 s, the composer's RSS sampled throughout. The
workers keep their own queue limit (256, the default), as in finding 3: past it they
refuse with QUEUE_FULL after the wait.

One line per admitting variant, the `admission_off` figures as its baseline, judged
against issue 11's goals: goodput (runs answered per second during the overload) >= 90% of
the capacity; p99 of the admitted runs <= 2x the unloaded p99; every refusal
RESOURCE_EXHAUSTED with a retry hint and no CANCELLED at all; the composer's RSS bounded
(peak <= 1.25x its RSS at the start); recovered in under 1 s: from the end of the overload
to the first probe run that starts a streak of answers within 2x the unloaded p99.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from bench.common.load.driver import Level, run_load
from bench.common.load.open_loop import Phase, run_open_loop
from bench.common.memory import MB, RssSampler
from bench.common.stats import clean, ratio
from bench.composer.run import Run, without_sample
from bench.composer.stacks import StackProcs, modelyard_stacks

GRAPH = "slow-one"
MODEL = "slow"
SLOW_ECHO = "tests.support.models:SlowEcho"
DELAY_MS = 40.0
WORKERS = ("slow-a", "slow-b")
AT_ONCE = len(WORKERS)  # batching off: a worker runs one call of a model at a time
NOMINAL_CAPACITY_RPS = AT_ONCE * 1000.0 / DELAY_MS
# each stack's max_runs_in_flight, None: unset (the composer sizes its limit); measured in
# this order: the admitting stacks before the one whose backlog lingers
LIMITS: dict[str, int | None] = {
    "sized": math.ceil(1.5 * AT_ONCE),
    "default": None,
    "admission_off": 1_000_000,
}
LIMIT_VARIABLE = "MODELYARD_COMPOSER_MAX_RUNS_IN_FLIGHT"
INPUTS = {"x": "payload"}

UNLOADED = Level(1, 200, 10, 30.0)
CAPACITY = Level(4 * AT_ONCE, 300, 20, 30.0)
WARM_UP = Level(AT_ONCE, 40, 10, 20.0)  # at most the sized limit: nothing refused
OVERLOAD = 2.0  # x capacity
PROBE = 0.25  # x capacity
DEADLINE_S = 10.0  # per call, as the closed-loop benches
SECONDS = {"overload": 60.0, "probe": 10.0}
# smoke: short phases, and the default limit's stack left out (a stack start is ~6 s here)
SMOKE_SECONDS = {"overload": 2.0, "probe": 1.0}
SMOKE_VARIANTS = ("sized", "admission_off")

GOODPUT_MIN = 0.9  # x capacity
P99_MAX = 2.0  # x unloaded p99
RECOVERY_MAX_S = 1.0
RECOVERED_STREAK = 5  # probe runs in a row within the threshold
RSS_GROWTH_MAX = 1.25  # peak / at start


def write_stack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    graph = {
        "name": GRAPH,
        "description": "one SlowEcho call (bench.composer soak)",
        "inputs": {"x": "string"},
        "nodes": [{"name": "a", "model": MODEL, "inputs": {"x": "inputs.x"}}],
        "outputs": {"x": "a.x"},
    }
    graph_path = folder / f"{GRAPH}.yaml"
    graph_path.write_text(yaml.safe_dump(graph, sort_keys=False))
    model = {"name": MODEL, "class": SLOW_ECHO, "options": {"delay_ms": DELAY_MS}}
    workers = [{"worker_id": worker, "models": [model]} for worker in WORKERS]
    path = folder / "stack-soak.yaml"
    path.write_text(yaml.safe_dump({"workers": workers, "graphs": [str(graph_path)]}))
    return path


def environments(variants: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each stack's composer limit, as an operator sets it (or leaves it): the environment."""
    envs: dict[str, dict[str, str]] = {}
    for name in variants:
        limit = LIMITS[name]
        envs[name] = {} if limit is None else {LIMIT_VARIABLE: str(limit)}
    return envs


def run_spec(level: Level, procs: StackProcs) -> dict[str, Any]:
    return level.spec(
        kind="run",
        address=procs.composer,
        graph=GRAPH,
        inputs=[INPUTS],
        expect=INPUTS,
        deadline_s=DEADLINE_S,
        server_pids=list(procs.pids.values()),
    )


def soak(run: Run, stack_file: Path) -> None:
    variants = SMOKE_VARIANTS if run.smoke else tuple(LIMITS)
    with modelyard_stacks(stack_file, run.workdir / "soak", environments(variants)) as stacks:
        off = stacks["admission_off"]
        unloaded = without_sample(run.measure(run_spec(run.level(UNLOADED), off)))
        capacity = without_sample(run.measure(run_spec(run.level(CAPACITY), off)))
        threshold_ms = P99_MAX * unloaded["p99_ms"]
        results = {}
        for name, procs in stacks.items():
            if procs is not off:  # its composer's channels, endpoint sets, first allocations
                run_load(run_spec(run.level(WARM_UP), procs))
            results[name] = overload(run, name, procs, capacity["throughput_rps"], threshold_ms)
    measured = {"unloaded": unloaded, "capacity": capacity}
    for name in [v for v in ("sized", "default") if v in results]:
        run.recorder.emit(record(name, results[name], results["admission_off"], measured))


def overload(
    run: Run, name: str, procs: StackProcs, capacity_rps: float, threshold_ms: float
) -> dict[str, Any]:
    """Twice the capacity, then the probe; the composer's RSS meanwhile, and the recovery."""
    seconds = SMOKE_SECONDS if run.smoke else SECONDS
    phases = [
        Phase("overload", round(OVERLOAD * capacity_rps, 2), seconds["overload"]),
        Phase("probe", round(PROBE * capacity_rps, 2), seconds["probe"], keep_calls=True),
    ]
    rss = RssSampler({"composer": procs.pids["composer"]})
    at_start = rss.snapshot()["composer"]
    with rss:  # the open loop uses the spec's kind of call and deadline, not its counts
        result = run_open_loop(run_spec(WARM_UP, procs), phases)
    at_end = rss.snapshot()["composer"]
    over, probe = result["phases"]
    calls = probe.pop("calls")
    peak = max(rss.peak["composer"], at_start, at_end)
    return {
        "max_runs_in_flight": LIMITS[name],
        "overload": over,
        "probe": probe,
        "recovery_s": recovery_s(calls, threshold_ms),
        "recovery_threshold_ms": round(threshold_ms, 2),
        "composer_rss_mb": {
            "at_start": round(at_start / MB, 1),
            "peak": round(peak / MB, 1),
            "at_end": round(at_end / MB, 1),
            "peak_ratio": ratio(peak, at_start),
            "samples": rss.samples,
        },
        "timeline": result["timeline"],
        "error_messages": result["error_messages"],
    }


def recovery_s(calls: list[list[Any]], threshold_ms: float) -> float | None:
    """Seconds from the end of the overload to the first probe run (issue time) that
    starts `RECOVERED_STREAK` runs in a row answered within the threshold (or runs to the
    probe's end that way); None when there is no such run."""
    streak_from: float | None = None
    streak = 0
    for offset, latency_ms, code in calls:  # in issue order
        if code or latency_ms > threshold_ms:
            streak_from, streak = None, 0
            continue
        if streak_from is None:
            streak_from = offset
        streak += 1
        if streak >= RECOVERED_STREAK:
            return round(streak_from, 3)
    return round(streak_from, 3) if streak_from is not None else None


def record(
    name: str, mine: dict[str, Any], off: dict[str, Any], measured: dict[str, Any]
) -> dict[str, Any]:
    unloaded, capacity = measured["unloaded"], measured["capacity"]
    over = mine["overload"]
    codes = dict(over["error_codes"])
    refused = codes.pop("RESOURCE_EXHAUSTED", 0)
    goodput = ratio(over["goodput_rps"], capacity["throughput_rps"])
    p99 = ratio(over["p99_ms"], unloaded["p99_ms"])
    recovery = mine["recovery_s"]
    rss = mine["composer_rss_mb"]["peak_ratio"]
    checks = {
        "capacity and unloaded p99 measured without errors": clean(unloaded) and clean(capacity),
        f"goodput >= {GOODPUT_MIN:g}x capacity": (goodput or 0.0) >= GOODPUT_MIN,
        f"p99 of admitted runs <= {P99_MAX:g}x unloaded p99": p99 is not None and p99 <= P99_MAX,
        "every refusal RESOURCE_EXHAUSTED with a retry hint": not codes
        and over["refused_with_retry_hint"] == refused,
        "no bare CANCELLED": "CANCELLED" not in over["error_codes"],
        f"composer RSS peak <= {RSS_GROWTH_MAX:g}x its start": (rss or 0.0) <= RSS_GROWTH_MAX,
        f"recovered in < {RECOVERY_MAX_S:g} s": recovery is not None and recovery < RECOVERY_MAX_S,
    }
    return {
        "bench": "composer_soak",
        "scenario": f"one-node graph at {OVERLOAD:g}x capacity, open loop, "
        f"max_runs_in_flight={mine['max_runs_in_flight'] or 'unset: sized'} ({name})",
        "stack": f"{len(WORKERS)} workers serving SlowEcho ({DELAY_MS:g} ms a call, "
        f"batching off): nominal capacity {NOMINAL_CAPACITY_RPS:g} runs/s",
        "unloaded": unloaded,
        "capacity": capacity,
        "admission": mine,
        "baseline": {
            "name": "the same stack with admission off (max_runs_in_flight=1,000,000)",
            **off,
        },
        "goodput_ratio": goodput,
        "p99_ratio": p99,
        "refused": refused,
        "other_error_codes": codes,
        "goal": f"at {OVERLOAD:g}x capacity: goodput >= {GOODPUT_MIN:g}x capacity, p99 of "
        f"admitted runs <= {P99_MAX:g}x the unloaded p99, bounded memory, recovery < "
        f"{RECOVERY_MAX_S:g} s, no bare CANCELLED (issue 11)",
        "checks": checks,
        "pass": all(checks.values()),
    }
