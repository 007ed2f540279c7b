"""Open-loop load: calls issued on a schedule, whatever the answers.

    python -m bench.common.load.open_loop '{"load": {<LoadSpec>}, "phases": [<Phase>, ...]}'

The closed-loop generator (`python -m bench.common.load`) sends a call when one is
answered, so it can never offer a server more than it serves; overload needs arrivals that
do not wait. Each phase issues calls evenly spaced at `rate_rps` for `seconds`, every call
its own task, phases back to back. The load spec gives the kind of call (its `kind`,
`address`, `inputs`, `deadline_s`, `server_pids`; concurrency and request counts are
unused); one checked call comes first, no warm-up.

One "result" line: per phase what was issued and answered (codes; refusals by reason and
whether they carried gRPC's retry hint), the latency of its successful calls and of its
failed ones, goodput (the successful answers that arrived within the phase, per second),
the most calls outstanding, how late the schedule ran, CPU use; a per-second timeline of
the whole run; the first message of each error code; and for phases with `keep_calls`,
every call as [offset from the phase's start s, latency ms, code or ""] for the bench to
judge (a recovery).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc.aio

from bench.common.cpu import pct
from bench.common.load.__main__ import KINDS, emit
from bench.common.load.__main__ import parse as parse_load
from bench.common.load.driver import run_to_result
from bench.common.load.phase import CpuUse, error_name
from bench.common.load.spec import LoadSpec
from bench.common.load.target import Call
from bench.common.stats import latency_summary, percentile
from modelyard.errors import from_rpc_error

MODULE = "bench.common.load.open_loop"
PUSHBACK = "grpc-retry-pushback-ms"
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Phase:
    name: str
    rate_rps: float
    seconds: float
    keep_calls: bool = False

    @property
    def count(self) -> int:
        return max(1, round(self.rate_rps * self.seconds))


@dataclass
class Outcome:
    phase: int
    issued_at: float  # monotonic
    lag_s: float  # how far behind its scheduled time it was issued
    latency_s: float = 0.0
    code: str = ""  # "" = answered
    reason: str = ""  # the ErrorInfo reason a server sent (OVERLOADED, QUEUE_FULL), if any
    hinted: bool = False  # a refusal that carried grpc-retry-pushback-ms

    @property
    def ended_at(self) -> float:
        return self.issued_at + self.latency_s


class Schedule:
    """Issues the phases' calls and records each outcome."""

    def __init__(self, call: Call, phases: list[Phase]) -> None:
        self.call = call
        self.phases = phases
        self.outcomes: list[Outcome] = []
        self.starts: list[float] = []  # each phase's start, monotonic
        self.cpu: list[CpuUse] = []
        self.outstanding = 0
        self.max_outstanding: list[int] = [0] * len(phases)
        self.messages: dict[str, str] = {}  # the first message of each error code

    async def run(self, server_pids: list[int]) -> None:
        """Issues every call, phase after phase; returns once every call has ended."""
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        for index, phase in enumerate(self.phases):
            self.starts.append(start)
            self.cpu.append(CpuUse(server_pids).start())
            for i in range(phase.count):
                due = start + i / phase.rate_rps
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                outcome = Outcome(index, now, max(0.0, now - due))
                self.outcomes.append(outcome)
                tasks.append(asyncio.create_task(self._one(len(self.outcomes) - 1, outcome)))
            start += phase.seconds
            if (wait := start - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self.cpu[index].stop()
        await asyncio.gather(*tasks)

    async def _one(self, sequence: int, outcome: Outcome) -> None:
        self.outstanding += 1
        phase = outcome.phase
        self.max_outstanding[phase] = max(self.max_outstanding[phase], self.outstanding)
        try:
            await self.call(sequence)
        except Exception as error:
            outcome.code = error_name(error)
            message = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
            self.messages.setdefault(outcome.code, (message or "")[:MESSAGE_CHARS])
            if isinstance(error, grpc.aio.AioRpcError):
                outcome.hinted = PUSHBACK in dict(error.trailing_metadata() or ())
                read = from_rpc_error(error)
                outcome.reason = read.reason if read.domain else ""
        finally:
            outcome.latency_s = time.monotonic() - outcome.issued_at
            self.outstanding -= 1


def phase_figures(schedule: Schedule, index: int) -> dict[str, Any]:
    phase = schedule.phases[index]
    start, end = schedule.starts[index], schedule.starts[index] + phase.seconds
    mine = [o for o in schedule.outcomes if o.phase == index]
    ok = [o for o in mine if not o.code]
    failed = [o for o in mine if o.code]
    answered_within = sum(1 for o in schedule.outcomes if not o.code and start <= o.ended_at < end)
    cpu = schedule.cpu[index]
    figures: dict[str, Any] = {
        "name": phase.name,
        "rate_rps": phase.rate_rps,
        "seconds": phase.seconds,
        "issued": len(mine),
        "ok": len(ok),
        "errors": len(failed),
        "error_codes": dict(Counter(o.code for o in failed)),
        "refusal_reasons": dict(Counter(o.reason for o in failed if o.reason)),
        "refused_with_retry_hint": sum(o.hinted for o in failed),
        "goodput_rps": round(answered_within / phase.seconds, 2),
        **latency_summary([1000 * o.latency_s for o in ok]),
        "errors_p99_ms": round(percentile(sorted(1000 * o.latency_s for o in failed), 99), 2),
        "max_outstanding": schedule.max_outstanding[index],
        "issue_lag_p99_ms": round(percentile(sorted(1000 * o.lag_s for o in mine), 99), 2),
        "server_cpu_pct": pct(cpu.server, phase.seconds),
        "client_cpu_pct": pct(cpu.client, phase.seconds),
        "other_cpu_pct": pct(max(0.0, cpu.machine - cpu.client - cpu.server), phase.seconds),
    }
    if phase.keep_calls:
        figures["calls"] = [
            [round(o.issued_at - start, 4), round(1000 * o.latency_s, 2), o.code] for o in mine
        ]
    return figures


def timeline(schedule: Schedule) -> list[list[float]]:
    """Per second of the run, by issue time: [second, issued, answered, failed, p99 ms of
    the answered]."""
    began = schedule.starts[0]
    seconds: dict[int, list[Outcome]] = {}
    for outcome in schedule.outcomes:
        seconds.setdefault(int(outcome.issued_at - began), []).append(outcome)
    rows: list[list[float]] = []
    for second, outcomes in sorted(seconds.items()):
        ok = sorted(1000 * o.latency_s for o in outcomes if not o.code)
        rows.append([second, len(outcomes), len(ok), len(outcomes) - len(ok),
                     round(percentile(ok, 99), 1)])  # fmt: skip
    return rows


async def measure(spec: LoadSpec, phases: list[Phase]) -> dict[str, Any]:
    target = await KINDS[spec.kind](spec)
    try:
        sample = await target.check()
        schedule = Schedule(target.calls[0], phases)
        emit({"event": "started", "at": time.monotonic()})
        await schedule.run(spec.server_pids)
    finally:
        await target.close()
    return {
        "phases": [phase_figures(schedule, i) for i in range(len(phases))],
        "timeline": timeline(schedule),
        "error_messages": schedule.messages,
        "sample": sample,
    }


def run_open_loop(load: dict[str, Any], phases: list[Phase]) -> dict[str, Any]:
    """Runs one open-loop load in its own process; its result."""
    spec = {"load": load, "phases": [vars(phase) for phase in phases]}
    longest = sum(p.seconds for p in phases) + float(load.get("deadline_s", 10.0)) + 60.0
    return run_to_result(MODULE, spec, longest)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.common.load.open_loop '<spec as JSON>'")
    data = json.loads(sys.argv[1])
    spec = parse_load([json.dumps(data["load"])])
    phases = [Phase(**phase) for phase in data["phases"]]
    emit({"event": "result", **asyncio.run(measure(spec, phases))})


if __name__ == "__main__":
    main()
