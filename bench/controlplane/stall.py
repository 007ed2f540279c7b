"""controlplane_leader_stall: SIGSTOP the elected leader for S seconds; does it keep leading?

Issue 12's goal: the leader survives a 2 s event-loop stall without stepping down, a bounded
and measured tolerance. A real etcd and two control-plane replicas (`modelyard
controlplane`, its `election_ttl` from a config file); the bench stops the leader's whole
process with SIGSTOP for S seconds, then SIGCONTs it, for S = 1, 2, 3, 4 s at the default
TTL (5 s) and at 2 s, the comparison that shows why the default is what it is.

A stopped process is a stalled event loop as far as leadership goes: everything the
election counts on runs on the replica's asyncio loop (the keep-alive timer, the budget it
checks, `is_leader`), and a stopped process runs none of it, as a loop blocked by a long
synchronous call or a GC pause would not. It also stops gRPC's own threads, which a blocked
loop leaves running, but none of them keeps the lease alive (aetcd has no keep-alive of its
own). etcd meanwhile counts the lease down.

The arithmetic (modelyard_server/lease.py): a refresh asked at t keeps etcd's lease until
t + ttl; the session counts on it until t + ttl - margin (margin = ttl/6) and refreshes
every ttl/3. A stall that begins δ after the last refresh and lasts S leaves a budget of
ttl - margin - δ - S when the loop runs again; the leader keeps leading if it is positive.
δ is between 0 (a stall just after a refresh: tolerance ttl - margin) and ttl/3 (just
before the next: ttl - ttl/3 - margin = ttl/2, the tolerance the code guarantees).

To measure both ends instead of a random point between them, each stall is timed against
the leader's refreshes: the bench polls etcd's `etcd_debugging_lease_renewed_total` (the
leader's is the only lease: a follower holds none) every 20 ms until it grows, then stops
the leader by the clock just after that renewal ("best") or 0.1 s before the next is due
("worst"), and reads the counter once more: if another renewal slipped in, the leader is
resumed at once and the stop timed again (up to 5 tries, which also pass over a renewal
seen only to within more than ±50 ms). The true worst case is a stall that begins while a
refresh is in flight: its answer may lose to the attempt's timer when the loop runs again
(then the retry comes 0.1 s later), so the tolerance there is about 0.1 s and a round trip
or two below ttl/2; the bench cannot aim at that window from outside (it is milliseconds
wide) and leaves it to the arithmetic. Throughout, it reads the election key and asks each
running replica ListWorkers (its `leader` flag) every 50 ms.

Per trial: whether leadership was kept (the key kept its holder and lease, and the leader
logged no step-down), the step-down's reason, when a leader served again, whether a replica
ever said it led while the key named another, and the budget the arithmetic predicts from
the measured δ and stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common.servers import Server, Service
from bench.controlplane.election_watch import Observer, Renewal, Renewals, Sample
from bench.controlplane.run import Run, control_plane
from controlplane.settings import ControlPlaneSettings
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.lease import LeaseSession

DEFAULT_TTL: float = ControlPlaneSettings.model_fields["election_ttl"].default
COMPARED_TTL = 2.0
GOAL_STALL_S = 2.0
REPLICAS = ("a", "b")
AFTER_RENEWAL_S = 0.05  # "best": this long after a renewal was seen
BEFORE_NEXT_S = 0.1  # "worst": this long before the next refresh is due
PHASE_SLACK_S = 0.1  # a stall this much earlier than planned (δ's error) missed its phase
PHASE_ATTEMPTS = 5  # tries at a stop with no renewal between the one seen and the stop
RENEWAL_PRECISION_S = 0.05  # a renewal seen less precisely times no stop (but the last try)
BAND_S = 0.15  # trials this close to the bound may go either way (refresh round trip, lag)
OBSERVE_S = 1.5  # after the resume: a step-down comes at once, a lost refresh within 0.5 s
SETTLE_S = 1.0  # between trials, once one leader serves again
STEPS_DOWN = " steps down: "  # controlplane/election.py's log line


@dataclass(frozen=True)
class Sizes:
    ttls: tuple[float, ...]
    phases: tuple[str, ...]
    stalls_s: tuple[float, ...]


FULL = Sizes((DEFAULT_TTL, COMPARED_TTL), ("worst", "best"), (1.0, 2.0, 3.0, 4.0))
SMOKE = Sizes((DEFAULT_TTL,), ("worst",), (0.5,))


@dataclass(frozen=True)
class Lease:
    """What modelyard_server/lease.py makes of an election_ttl (read from the code)."""

    ttl: float  # etcd grants whole seconds
    margin: float

    @classmethod
    def of(cls, election_ttl: float) -> Lease:
        session = LeaseSession(None, ttl=election_ttl)
        return cls(session.ttl, session.margin)

    @property
    def refresh_every(self) -> float:
        return self.ttl / 3.0

    def offset(self, phase: str) -> float:
        """How long after a renewal a stall of `phase` begins."""
        return AFTER_RENEWAL_S if phase == "best" else self.refresh_every - BEFORE_NEXT_S

    def describe(self) -> dict[str, Any]:
        return {
            "lease_ttl_s": self.ttl,
            "refresh_every_s": round(self.refresh_every, 3),
            "margin_s": round(self.margin, 3),
            "bound_s": {
                "worst": round(self.ttl - self.refresh_every - self.margin, 3),
                "best": round(self.ttl - self.margin, 3),
            },
        }


@dataclass
class Cluster:
    lease: Lease
    replicas: dict[str, Server]
    observer: Observer
    renewals: Renewals
    trials: list[dict[str, Any]] = field(default_factory=list)


def replica_command(workdir: Path, etcd: EtcdServer, name: str, election_ttl: float) -> Service:
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"replica_id": name, "election_ttl": election_ttl}))
    return Service(("controlplane", "--config", str(config), "--etcd", etcd.endpoint))


@contextlib.asynccontextmanager
async def cluster(run: Run, election_ttl: float) -> AsyncIterator[Cluster]:
    """A fresh etcd and two replicas at `election_ttl`, once one of them leads."""
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        replicas: dict[str, Server] = {}
        for letter in REPLICAS:
            name = f"cp-stall-ttl{election_ttl:g}-{letter}"
            command = replica_command(run.workdir, etcd, name, election_ttl)
            replicas[name] = stack.enter_context(control_plane(etcd, run.workdir, name, command))
        async with Observer(etcd, replicas) as observer:
            await observer.serving_leader(0.0, 3 * election_ttl + 10)
            yield Cluster(Lease.of(election_ttl), replicas, observer, Renewals(etcd))


@dataclass(frozen=True)
class Stop:
    name: str  # the replica stopped: the leader
    holder: tuple[str, int]  # the election key as it was
    logged: int  # step-downs in its log before the stop
    renewal: Renewal  # the last renewal of its lease before the stop
    at: float
    attempts: int
    #: another renewal came between `renewal` and the stop on every attempt: the stall's
    #: point in the refresh cycle is not known
    missed: bool


async def stop_leader(c: Cluster, offset: float) -> Stop:
    """SIGSTOPs the serving leader `offset` seconds after a renewal of its lease. Polling
    would make the stop late, so the stop is timed by the clock and the counter read once
    after it: if a renewal slipped in (the stop came late, or the refresh was early), the
    leader is resumed at once (a stall of one reading, ~5 ms on a calm machine) and, once a
    leader serves again, the stop tried anew. A renewal seen only roughly (a slow reading
    on a busy machine) is let pass for the next one; the last attempt goes ahead whatever
    it saw."""
    attempt = 0
    while True:
        attempt += 1
        last = attempt == PHASE_ATTEMPTS
        holder = await c.observer.serving_leader(time.monotonic(), 3 * c.lease.ttl + 10)
        name, leader = holder[0], c.replicas[holder[0]]  # (a Server's name is its command's)
        logged = len(step_downs(leader.log_path))
        renewal = await c.renewals.next(3 * c.lease.ttl)
        if renewal.within > RENEWAL_PRECISION_S and not last:
            continue
        await asyncio.sleep(max(0.0, renewal.at + offset - time.monotonic()))
        c.observer.stopped.add(name)
        os.kill(leader.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            count, _, _ = await c.renewals.read()  # the stopped replica renews nothing
        except BaseException:
            os.kill(leader.pid, signal.SIGCONT)
            raise
        missed = count != renewal.count
        if not missed or last:
            return Stop(name, holder, logged, renewal, stopped, attempt, missed)
        os.kill(leader.pid, signal.SIGCONT)
        c.observer.stopped.discard(name)
        await asyncio.sleep(SETTLE_S)


def step_downs(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line.partition(STEPS_DOWN)[2] for line in lines if STEPS_DOWN in line]


async def trial(c: Cluster, phase: str, stall_s: float) -> dict[str, Any]:
    """One stall of the current leader at `phase` of its refresh cycle, and what followed."""
    lease, observer = c.lease, c.observer
    stop = await stop_leader(c, lease.offset(phase))
    name, holder, leader = stop.name, stop.holder, c.replicas[stop.name]
    try:
        await asyncio.sleep(max(0.0, stop.at + stall_s - time.monotonic()))
    finally:
        os.kill(leader.pid, signal.SIGCONT)
        resumed = time.monotonic()
        observer.stopped.discard(name)
    await asyncio.sleep(OBSERVE_S)
    again = await observer.first(lambda s: bool(s.leading), stop.at, 3 * lease.ttl + 10)
    after = observer.since(stop.at)
    reasons = step_downs(leader.log_path)[stop.logged :]
    key_changed = any(s.holder != holder for s in after)
    since_refresh = stop.at - stop.renewal.at
    budget = lease.ttl - lease.margin - since_refresh - (resumed - stop.at)
    record = {
        "phase": phase,
        "stall_s": stall_s,
        "stalled_s": round(resumed - stop.at, 3),
        "since_refresh_s": round(since_refresh, 3),
        "since_refresh_pm_s": round(stop.renewal.within, 3),
        "phase_error_s": round(since_refresh - lease.offset(phase), 3),
        "phase_attempts": stop.attempts,
        "phase_missed": stop.missed,
        "budget_left_s": round(budget, 3),  # predicted: kept if positive
        "predicted_kept": budget > 0,
        "kept": not key_changed and not reasons,
        "stepped_down": bool(reasons),
        "step_down_reasons": reasons,
        "key_changed": key_changed,
        "leader_before": name,
        "leader_after": sorted(again.leading) if again else [],
        "leader_again_after_stop_s": round(again.at - stop.at, 3) if again else None,
        "second_leader_samples": second_leaders(after),
    }
    await observer.serving_leader(time.monotonic(), 3 * lease.ttl + 10)
    await asyncio.sleep(SETTLE_S)
    return record


def second_leaders(samples: list[Sample]) -> int:
    """Samples in which a replica said it led while the key named another both before it
    was asked and at the next sample (read only before, a key that moved to it a moment
    later, while its answer was on the way, would look like a second leader)."""
    return sum(
        1
        for sample, later in itertools.pairwise(samples)
        if sample.holder is not None
        and sample.holder == later.holder
        and sample.leading - {sample.holder[0]}
    )


def tolerance(trials: list[dict[str, Any]], phase: str) -> tuple[float | None, float | None]:
    """The longest stall of `phase` kept while every shorter one was kept too, and the
    shortest that was not."""
    longest = None
    for t in sorted((t for t in trials if t["phase"] == phase), key=lambda t: t["stall_s"]):
        if not t["kept"]:
            return longest, t["stall_s"]
        longest = t["stall_s"]
    return longest, None


def per_ttl(election_ttl: float, c: Cluster) -> dict[str, Any]:
    phases = sorted({t["phase"] for t in c.trials})
    found = {phase: tolerance(c.trials, phase) for phase in phases}
    return {
        "election_ttl": election_ttl,
        **c.lease.describe(),
        "tolerance_s": {phase: kept for phase, (kept, _) in found.items()},
        "first_lost_s": {phase: lost for phase, (_, lost) in found.items()},
        "trials": c.trials,
    }


async def leader_stall(run: Run) -> None:
    sizes = SMOKE if run.smoke else FULL
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    results: list[dict[str, Any]] = []
    for election_ttl in sizes.ttls:
        async with cluster(run, election_ttl) as c:
            await run.calm()
            for phase in sizes.phases:
                for stall_s in sizes.stalls_s:
                    c.trials.append(await trial(c, phase, stall_s))
        results.append(per_ttl(election_ttl, c))
    loadavg_after = [round(x, 2) for x in os.getloadavg()]
    run.recorder.emit(record(results, sizes, loadavg_before, loadavg_after))


def record(
    results: list[dict[str, Any]],
    sizes: Sizes,
    loadavg_before: list[float],
    loadavg_after: list[float],
) -> dict[str, Any]:
    trials = [t for r in results for t in r["trials"]]
    at_default = next(r for r in results if r["election_ttl"] == DEFAULT_TTL)["trials"]
    goal_trials = [t for t in at_default if t["stall_s"] <= GOAL_STALL_S]
    clear = [
        t
        for t in trials
        if not t["phase_missed"] and abs(t["budget_left_s"]) > BAND_S + t["since_refresh_pm_s"]
    ]
    checks = {
        f"every stall of at most {GOAL_STALL_S:g} s at the default election_ttl "
        f"({DEFAULT_TTL:g} s) kept leadership": bool(goal_trials)
        and all(t["kept"] for t in goal_trials),
        "never a second leader (no replica said it led while the key named another)": all(
            t["second_leader_samples"] == 0 for t in trials
        ),
        "a leader served again after every stall": all(
            t["leader_again_after_stop_s"] is not None for t in trials
        ),
        f"outcomes match the lease arithmetic (budgets clear of 0 by over {BAND_S:g} s "
        "plus the error of δ)": all(t["kept"] == t["predicted_kept"] for t in clear),
        # A stop that came late (the bench or the leader lagged) met the leader later in its
        # cycle, a harsher test; one after another refresh met it early: the goal's trials
        # must not have. (The comparison's 2 s stall outlasts even the best phase's bound.)
        "every stall at the default election_ttl began no earlier in the refresh cycle than "
        "planned": all(
            not t["phase_missed"] and t["phase_error_s"] >= -PHASE_SLACK_S for t in at_default
        ),
    }
    return {
        "bench": "controlplane_leader_stall",
        "scenario": (
            f"etcd + {len(REPLICAS)} control-plane replicas; SIGSTOP the leader for "
            f"{', '.join(f'{s:g}' for s in sizes.stalls_s)} s at phases "
            f"{'/'.join(sizes.phases)} of its lease refresh, at election_ttl "
            f"{' and '.join(f'{t:g}' for t in sizes.ttls)} s"
        ),
        "ttls": results,
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "baseline": (
            f"the same stalls at election_ttl {COMPARED_TTL:g} s in the same run, beside the "
            "lease arithmetic's bounds (bound_s: ttl - ttl/3 - margin at the worst phase, "
            "ttl - margin at the best)"
        ),
        "goal": (
            f"the leader survives a {GOAL_STALL_S:g} s event-loop stall without stepping "
            f"down at the default election_ttl ({DEFAULT_TTL:g} s), at either end of its "
            "refresh cycle (issue 12)"
        ),
        "checks": checks,
        "pass": all(checks.values()),
    }
