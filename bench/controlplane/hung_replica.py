"""controlplane_hung_replica: SIGSTOP one of two replicas under load, rescue off vs on.

Two SlowEcho workers serve one model; 16 coroutines on one RoutedClient call it back to
back with a 10 s deadline per call. Once both replicas serve, the bench waits (bounded)
until the victim has calls in flight and SIGSTOPs it for longer than the deadline (its
connections stay open: no RST, no UNAVAILABLE), then SIGCONTs it and waits until it is
back in the endpoint set. The same load and stop run twice in one run: first with
`RoutedClient(rescue=False)` (the client as it was: calls sent to the stopped replica wait
out their deadline), then with rescue on (the default). Failed calls (goal 0 with rescue),
latency of every call and of the calls started during the stop (p50, p99, max), calls
completed during the stop, when a separate subscriber saw the victim leave the set, and the
client's retries (from its INFO log line) by cause: the replica's silence, its leaving the
set, anything else, and any before the stop (a rescue under normal load would be a false
one).

The load runs in the bench's own process (the client under test must be built with
`rescue` either way, which the load generator's specs do not carry); at ~16 calls in flight
it costs the bench little, and the figures compared are failures and seconds, not
microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.common.metrics import in_flight
from bench.common.stats import latency_summary
from bench.controlplane.follower import SetFollower
from bench.controlplane.run import (
    Run,
    Worker,
    WorkerSpec,
    control_plane,
    require_members,
    start_workers,
)
from modelyard.routed_client import RoutedClient
from modelyard_cli.etcd_server import EtcdServer

MODEL = "echo-hung"
WORKERS = [WorkerSpec(f"hung-{i}", 5.0) for i in (1, 2)]
VICTIM = "hung-2"
CONCURRENCY = 16
DEADLINE_S = 10.0


@dataclass(frozen=True)
class Sizes:
    warm_s: float  # load before the stop: channels open, latencies known
    stop_s: float  # how long the victim stays stopped
    after_s: float  # load once it is back


# the stop outlasts the deadline: a call left waiting on the victim fails; the load before
# it is long enough to show whether rescue fires when nothing is wrong
FULL = Sizes(warm_s=10.0, stop_s=DEADLINE_S + 2.0, after_s=2.0)
SMOKE = Sizes(warm_s=1.0, stop_s=2.0, after_s=0.5)


@dataclass
class Calls:
    """Every call of one variant: (started, ended, error or "")."""

    done: list[tuple[float, float, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self, client: RoutedClient, number: int) -> None:
        i = number
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await client.predict(MODEL, x=i)
                error = ""
            except Exception as failure:  # every failure counts, whatever its kind
                error = type(failure).__name__
            self.done.append((started, time.monotonic(), error))
            i += CONCURRENCY


async def hung_replica(run: Run) -> None:
    sizes = SMOKE if run.smoke else FULL
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        cp = stack.enter_context(control_plane(etcd, run.workdir, "cp-hung"))
        workers = await start_workers(stack, etcd, run.workdir, MODEL, WORKERS)
        async with SetFollower(cp.address, MODEL) as follower:
            await require_members(follower, set(workers), 30.0)
            await run.calm()
            variants = {}
            for name, rescue in (("before", False), ("after", True)):
                variants[name] = await one_variant(
                    cp.address, follower, workers[VICTIM], sizes, rescue=rescue
                )
    run.recorder.emit(record(variants, sizes))


class Retries(logging.Handler):
    """The routed client's retry log lines, with when they were written."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retrying on another replica" in message:
            self.lines.append((time.monotonic(), message))

    def by_cause(self, stopped_at: float) -> dict[str, int]:
        causes = {"silent": 0, "left_set": 0, "other": 0}
        for _, message in self.lines:
            if "nothing heard from the replica" in message:
                causes["silent"] += 1
            elif "left the endpoint set" in message:
                causes["left_set"] += 1
            else:
                causes["other"] += 1
        return {**causes, "before_stop": sum(1 for at, _ in self.lines if at < stopped_at)}


@contextlib.contextmanager
def retries_logged() -> Iterator[Retries]:
    logger = logging.getLogger("modelyard.routed_client")
    handler, level = Retries(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def one_variant(
    control: str, follower: SetFollower, victim: Worker, sizes: Sizes, *, rescue: bool
) -> dict[str, Any]:
    calls = Calls()
    with retries_logged() as retries:
        outcome = await stop_under_load(control, follower, victim, sizes, calls, rescue=rescue)
    stopped_at = outcome["stopped_at"]
    return {
        **summary(calls.done, **outcome, rescue=rescue),
        "retries": retries.by_cause(stopped_at),
    }


async def stop_under_load(
    control: str,
    follower: SetFollower,
    victim: Worker,
    sizes: Sizes,
    calls: Calls,
    *,
    rescue: bool,
) -> dict[str, Any]:
    """Runs the load on a fresh client, stops the victim under it and resumes it; when
    that happened and what the victim and the endpoint set did."""
    async with RoutedClient([control], timeout=DEADLINE_S, rescue=rescue) as client:
        found = await client.wait_for_endpoints(MODEL, timeout=30.0)
        callers = [asyncio.create_task(calls.caller(client, n)) for n in range(CONCURRENCY)]
        try:
            await asyncio.sleep(sizes.warm_s)
            at_stop, waited = await until_in_flight(victim)
            mark = follower.mark()
            os.kill(victim.server.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                left = await follower.wait_for(lambda ids: VICTIM not in ids, mark, sizes.stop_s)
                await asyncio.sleep(max(0.0, stopped_at + sizes.stop_s - time.monotonic()))
            finally:
                os.kill(victim.server.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            back = await follower.wait_for(lambda ids: VICTIM in ids, follower.mark(), 30.0)
            await asyncio.sleep(sizes.after_s)
        finally:
            calls.stop.set()
            await asyncio.gather(*callers)  # each finishes its call, within its deadline
    return {
        "stopped_at": stopped_at,
        "resumed_at": resumed_at,
        "replicas_at_start": len(found),
        "victim_in_flight_at_stop": at_stop,
        "stop_delayed_s": round(waited, 3),
        "left_set_after_s": round(left.at - stopped_at, 3) if left else None,
        "back_in_set_after_resume_s": round(back.at - resumed_at, 3) if back else None,
    }


async def until_in_flight(worker: Worker, limit_s: float = 3.0) -> tuple[int, float]:
    """Polls the worker's in-flight gauge every 10 ms until it is above 0 or `limit_s`
    passed (a stop that meets no call tests nothing); the last reading, how long it took."""
    began = time.monotonic()
    while True:
        calls = await asyncio.to_thread(in_flight, worker.metrics_port, MODEL)
        waited = time.monotonic() - began
        if calls > 0 or waited >= limit_s:
            return calls, waited
        await asyncio.sleep(0.01)


def summary(
    done: list[tuple[float, float, str]], *, stopped_at: float, resumed_at: float, **facts: Any
) -> dict[str, Any]:
    """The calls' outcomes and latencies, beside `facts` (the stop and resume times are
    monotonic, meaningful only to this process: left out)."""
    errors: dict[str, int] = {}
    for _, _, error in done:
        if error:
            errors[error] = errors.get(error, 0) + 1
    during = [(s, e) for s, e, error in done if stopped_at <= s < resumed_at and not error]
    return {
        **facts,
        "requests": len(done),
        "ok": sum(1 for *_, error in done if not error),
        "failed": sum(errors.values()),
        "errors": errors,
        "latency": latency_summary([(e - s) * 1000 for s, e, error in done if not error]),
        "started_during_stop": latency_summary([(e - s) * 1000 for s, e in during]),
        "completed_during_stop": sum(1 for _, e, _ in done if stopped_at <= e < resumed_at),
    }


def record(variants: dict[str, dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    before, after = variants["before"], variants["after"]
    checks = {
        "0 failed requests with rescue": after["failed"] == 0,
        "calls kept completing during the stop": after["completed_during_stop"] > 0,
        "the stop met calls in flight on the victim": all(
            v["victim_in_flight_at_stop"] > 0 for v in variants.values()
        ),
        "no rescue before the stop (none under normal load)": (
            after["retries"]["before_stop"] == 0
        ),
    }
    return {
        "bench": "controlplane_hung_replica",
        "scenario": (
            f"2 SlowEcho workers ({WORKERS[0].delay_ms:g} ms, unbatched), {CONCURRENCY} "
            f"coroutines on one RoutedClient (p2c), {DEADLINE_S:g} s deadline per call; "
            f"SIGSTOP {VICTIM} for {sizes.stop_s:g} s after {sizes.warm_s:g} s"
        ),
        "before": before,
        "after": after,
        "failed_before": before["failed"],
        "failed_after": after["failed"],
        "baseline": "the same load and stop with RoutedClient(rescue=False), in the same run",
        "goal": "0 failed requests with rescue (issue 11: SIGSTOP one of two replicas, c=16)",
        "checks": checks,
        "pass": all(checks.values()),
    }
