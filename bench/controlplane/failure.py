"""controlplane_failure: SIGKILL one of three replicas under load.

16 coroutines on one RoutedClient (p2c) for 30 s; at t = 10 s of the measured phase the
bench waits (bounded) until the victim has calls in flight, then kills it: no lease revoke,
no NOT_SERVING. Failed requests (goal 0), retries and when they happened, the slowest call
near the kill, when a separate subscriber's set drops the victim, when its key expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench.common.children import Child
from bench.common.cpu import CpuWindow
from bench.common.load.driver import Level, result_of, start_load
from bench.common.metrics import in_flight
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
from modelyard_server.etcd import EtcdClient, Keys

MODEL = "echo2"
WORKERS = [WorkerSpec(f"fail-{i}", 2.0) for i in (1, 2, 3)]
VICTIM = "fail-2"
WITHDRAW_GOAL_S = 1.0  # what tests/integration/test_controlplane.py holds the prober to
BUCKET_S = 0.1  # the load's timeline, to find the calls around the kill
KEYS = Keys()


@dataclass(frozen=True)
class Sizes:
    kill_at_s: float  # into the measured phase
    load: Level  # time-capped: the request budget never runs out


FULL = Sizes(10.0, Level(16, 10_000_000, 300, 30.0))
SMOKE = Sizes(1.0, Level(16, 10_000_000, 20, 3.0))


async def failure(run: Run) -> None:
    sizes = SMOKE if run.smoke else FULL
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        cp = stack.enter_context(control_plane(etcd, run.workdir, "cp-failure"))
        workers = await start_workers(stack, etcd, run.workdir, MODEL, WORKERS)
        async with SetFollower(cp.address, MODEL) as follower:
            await require_members(follower, set(workers), 30.0)
            spec = sizes.load.spec(
                kind="routed", control_planes=[cp.address], model=MODEL, bucket_s=BUCKET_S
            )
            await run.calm()
            child = await start_load(spec, run.workdir, "load-failure")
            window = CpuWindow({"controlplane": [cp.pid], "client": [child.pid]}).start()
            try:
                observed = await kill_under_load(etcd, child, follower, workers[VICTIM], sizes)
                result = await result_of(child, spec)
                result["cpu"] = window.stop()  # warm-up included
            finally:
                await child.stop()
    run.recorder.emit(record(result, observed, sizes))


async def kill_under_load(
    etcd: EtcdServer, child: Child, follower: SetFollower, victim: Worker, sizes: Sizes
) -> dict[str, Any]:
    """Kills the victim `kill_at_s` into the measured phase, at the first moment it has
    calls in flight; when it left the endpoint set and when its etcd key expired, in
    seconds after the kill."""
    started = await child.next_event("started", 120.0)
    await asyncio.sleep(max(0.0, started["at"] + sizes.kill_at_s - time.monotonic()))
    # A balancer may leave a replica idle for a moment (see the balancing scenario); a kill
    # then would test nothing, so wait (bounded) until calls are in flight there.
    calls, waited = await until_in_flight(victim)
    mark = follower.mark()
    killed_at = time.monotonic()
    victim.server.process.kill()  # SIGKILL: no lease revoke, no NOT_SERVING, no drain
    gone, key_gone = await asyncio.gather(
        follower.wait_for(lambda ids: VICTIM not in ids, mark, 10.0),
        key_gone_after(etcd, KEYS.worker(VICTIM), 10.0),
    )
    return {
        "killed_at": killed_at,
        "victim_in_flight_at_kill": calls,
        "kill_delayed_s": round(waited, 3),
        "withdrawn_after_s": round(gone.at - killed_at, 4) if gone else None,
        "key_expired_after_s": round(key_gone - killed_at, 3) if key_gone else None,
    }


async def until_in_flight(worker: Worker, limit_s: float = 3.0) -> tuple[int, float]:
    """Polls the worker's in-flight gauge every 10 ms until it is above 0 or `limit_s`
    passed; the last reading and how long it took."""
    began = time.monotonic()
    while True:
        calls = await asyncio.to_thread(in_flight, worker.metrics_port, MODEL)
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


def record(result: dict[str, Any], observed: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
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
    load = sizes.load
    return {
        "bench": "controlplane_failure",
        "scenario": (
            f"3 SlowEcho workers ({WORKERS[0].delay_ms:g} ms, unbatched), "
            f"{load.concurrency} coroutines on one RoutedClient (p2c) for "
            f"{load.time_cap_s:g} s; SIGKILL {VICTIM} at t={sizes.kill_at_s:g} s"
        ),
        "load": result,
        "kill": {**observed, "around_kill": near, "retries_after_kill_s": retries[:50]},
        "baseline": (
            "none run: the goal is absolute (0 failed requests; withdrawn within "
            f"{WITHDRAW_GOAL_S:g} s, the bar tests/integration/test_controlplane.py sets)"
        ),
        "goal": "0 failed requests; time from the kill until WatchEndpoints drops the worker",
        "checks": checks,
        "pass": all(checks.values()),
    }
