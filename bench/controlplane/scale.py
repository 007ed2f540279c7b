"""controlplane_scale: 1,000 registered (fake) workers.

Start-up (fakes registered -> the full set at the subscriber -> a probe result recorded for
every fake), a quiet window (CPU of control plane, fakes and etcd; control-plane RSS), then
300 changes one at a time, each timed until the subscriber's set reflects it. The control
plane runs under bench/controlplane/gc_probe.py, so slow changes can be lined up with the
collector's full pauses. Then, informational: 9 more subscribers, idle CPU and 40 changes.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import profiling
from bench.common.cpu import CpuWindow
from bench.common.errors import BenchError
from bench.common.memory import rss_mb
from bench.common.servers import Program, Server
from bench.controlplane import profile
from bench.controlplane.fleet import (
    CHANGE_TIMEOUT_S,
    KEYS,
    MODEL,
    Change,
    Fleet,
    change_summary,
    churn,
    start_fleet,
)
from bench.controlplane.follower import RawSubscribers, SetFollower
from bench.controlplane.gc_probe import Pause, read_pauses
from bench.controlplane.run import Run, control_plane
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient

GOAL_MS = 200.0
CHURN_CAP_S = 30.0  # 12-20 s normally
EXTRA_CAP_S = 15.0
SLOW_CHANGE_MS = 60.0  # ~3x the typical change latency
PROFILE_S = 12.0


@dataclass(frozen=True)
class Sizes:
    fleet: int
    processes: int
    settle_s: float  # after convergence: the start-up storm's stragglers
    steady_s: float  # the quiet window
    registration_pairs: int  # delete + put back
    health_pairs: int  # NOT_SERVING + SERVING
    profile_pairs: int  # changes again while py-spy samples, when profiling
    extra_subscribers: int  # composers and clients all subscribe: how does the cost grow?
    extra_idle_s: float
    extra_pairs: int


FULL = Sizes(1000, 4, 2.0, 8.0, 100, 50, 40, 9, 4.0, 20)
SMOKE = Sizes(40, 2, 0.2, 0.5, 3, 2, 4, 2, 0.5, 2)


def probed_controlplane(etcd_endpoint: str) -> Program:
    """The control plane under the GC probe: collector pauses logged, SIGUSR1 freezes."""
    return Program(
        "bench.controlplane.gc_probe",
        ("--freeze-on-sigusr1", "controlplane", "--etcd", etcd_endpoint),
    )


async def scale(run: Run) -> None:
    sizes = SMOKE if run.smoke else FULL
    with EtcdServer() as etcd:
        command = probed_controlplane(etcd.endpoint)
        with control_plane(etcd, run.workdir, "cp-scale", command) as cp:
            client = EtcdClient(etcd.settings())
            fleet: Fleet | None = None
            try:
                async with SetFollower(cp.address, MODEL) as follower:
                    began = time.monotonic()
                    fleet = await start_fleet(
                        etcd.endpoint, sizes.fleet, sizes.processes, run.workdir
                    )
                    record = await measure(run, sizes, cp, client, follower, fleet, began)
            finally:
                if fleet is not None:
                    await fleet.stop()
                await client.close()
    run.recorder.emit(record)


async def measure(
    run: Run,
    sizes: Sizes,
    cp: Server,
    client: Any,
    follower: SetFollower,
    fleet: Fleet,
    began: float,
) -> dict[str, Any]:
    convergence = await converge(follower, client, sizes.fleet, began)
    if run.gc_freeze:
        os.kill(cp.pid, signal.SIGUSR1)  # the what-if: freeze the converged heap
    await asyncio.sleep(sizes.settle_s)
    await run.calm()
    pids = {"controlplane": [cp.pid], "fakes": fleet.pids, "etcd": etcd_pids()}
    steady_cpu = await idle_window(pids, cp.pid, sizes.steady_s)
    rng = random.Random(3)
    await run.calm()
    window = CpuWindow(pids).start()
    pairs = (sizes.registration_pairs, sizes.health_pairs)
    changes = await churn(follower, client, fleet, rng, pairs, CHURN_CAP_S)
    churn_cpu = {**window.stop(), "controlplane_rss_mb": rss_mb(cp.pid)}
    record = scale_record(sizes, convergence, steady_cpu, churn_cpu, changes)
    record["gc"] = gc_during(read_pauses(cp.log_path), window.started, changes)
    record["more_subscribers"] = await more_subscribers(
        run, sizes, cp, client, follower, fleet, rng
    )
    record["leadership_lost"] = log_count(cp.log_path, " steps down: ")  # election.py says so
    if run.gc_freeze:
        record["bench"] += "_whatif_gc_freeze"
        record["what_if"] = "gc.collect() + gc.freeze() in the control plane after convergence"
    if run.profile == "always" or (run.profile == "auto" and not record["pass"]):
        record["profile"] = await profile_churn(run, sizes, cp, follower, client, fleet, rng)
    return record


async def idle_window(pids: dict[str, list[int]], cp_pid: int, seconds: float) -> dict[str, Any]:
    """CPU use over `seconds` of no changes, and the control plane's RSS at the end."""
    window = CpuWindow(pids).start()
    await asyncio.sleep(seconds)
    return {**window.stop(), "controlplane_rss_mb": rss_mb(cp_pid)}


def log_count(path: Path, text: str) -> int:
    return sum(text in line for line in path.read_text(errors="replace").splitlines())


async def more_subscribers(
    run: Run,
    sizes: Sizes,
    cp: Server,
    client: Any,
    follower: SetFollower,
    fleet: Fleet,
    rng: random.Random,
) -> dict[str, Any]:
    """Informational: the same fleet with more subscribers to the model (raw streams, read
    but not parsed, so the bench's own CPU stays small): idle CPU and change latency."""
    pids = {"controlplane": [cp.pid]}
    extra_count = sizes.extra_subscribers
    async with RawSubscribers(cp.address, MODEL, extra_count) as extra:
        await extra.wait_first(30.0)
        idle = await idle_window(pids, cp.pid, sizes.extra_idle_s)
        await run.calm()
        window = CpuWindow(pids).start()
        changes = await churn(follower, client, fleet, rng, (sizes.extra_pairs, 0), EXTRA_CAP_S)
        busy = window.stop()
    return {
        "subscribers": 1 + extra_count,
        "idle": idle,
        "during_changes": busy,
        "changes": change_summary([c for group in changes.values() for c in group]),
        "changes_planned": 2 * sizes.extra_pairs,
        "bytes_per_subscriber": extra.bytes // extra_count,
        "messages_per_subscriber": extra.messages // extra_count,
    }


async def converge(follower: SetFollower, client: Any, size: int, began: float) -> dict[str, Any]:
    """Times the start-up: fakes registered, the full set at the subscriber, every fake
    probed by the leader."""
    registered = time.monotonic()
    full = await follower.wait_for(lambda ids: len(ids) == size, 0, 120.0)
    if full is None:
        raise BenchError(f"the set never reached {size}: last {len(follower.latest)}")
    probed = await wait_probed(client, size, 120.0)
    return {
        "fakes_registered_s": round(registered - began, 2),
        "full_set_at_subscriber_s": round(full.at - began, 2),
        "all_probed_s": round(probed - began, 2) if probed else None,
        "sets_received_during_startup": follower.mark(),
    }


async def wait_probed(client: Any, count: int, timeout: float) -> float | None:
    """When the leader had recorded a probe result for `count` workers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(await client.get_prefix(KEYS.health.encode()))) >= count:
            return time.monotonic()
        await asyncio.sleep(0.25)
    return None


def etcd_pids() -> list[int]:
    return [p.pid for p in psutil.Process().children() if p.name() == "etcd"]


def scale_record(
    sizes: Sizes,
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
    planned = 2 * (sizes.registration_pairs + sizes.health_pairs)
    checks = {
        f"p99 change -> subscriber <= {GOAL_MS:g} ms": (
            overall["missed"] == 0 and overall["p99_ms"] <= GOAL_MS
        ),
        "every planned change made and seen by the subscriber": (
            overall["missed"] == 0 and overall["count"] == planned
        ),
    }
    return {
        "bench": "controlplane_scale",
        "scenario": (
            f"{sizes.fleet} fake workers ({sizes.processes} processes, one grpc.aio server "
            f"and one etcd lease each, model {MODEL!r}); one WatchEndpoints subscriber"
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
        "baseline": "none run: the goal is absolute (a change reaches a subscriber in time)",
        "goal": f"p99 from a registration or health change to the subscriber's set "
        f"<= {GOAL_MS:g} ms; report control-plane RSS and CPU",
        "checks": checks,
        "pass": all(checks.values()),
    }


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
    run: Run,
    sizes: Sizes,
    cp: Server,
    follower: SetFollower,
    client: Any,
    fleet: Fleet,
    rng: random.Random,
) -> dict[str, Any]:
    """Repeats a shorter churn while py-spy samples the control plane; the stacks are kept
    next to the results as JSON (results/*.json is git-ignored)."""
    folded = run.workdir / "controlplane-profile-scale.txt"
    spy = profiling.record(cp.pid, PROFILE_S, folded, rate=250)
    began = time.monotonic()
    pairs = (sizes.profile_pairs, sizes.profile_pairs // 2)
    changes = await churn(follower, client, fleet, rng, pairs, PROFILE_S - 1.0)
    await asyncio.sleep(max(0.0, PROFILE_S - (time.monotonic() - began)))
    error = await asyncio.to_thread(profiling.finish, spy, 30.0)
    if error:
        return {"error": error}
    every = [c for group in changes.values() for c in group]
    saved = profiling.save_stacks(folded, run.output.parent / "controlplane-profile.json")
    return {
        "stacks_file": str(saved),
        "changes_while_sampling": change_summary(every),
        **profile.summary(folded),
    }
