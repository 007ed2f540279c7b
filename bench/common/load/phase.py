"""One phase of load (the warm-up, the measured phase) and what it measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc.aio

from bench.common.cpu import cpu_seconds, machine_busy_seconds, pct
from bench.common.load.target import Call
from bench.common.stats import percentile
from modelyard.errors import ModelyardError


@dataclass
class Bucket:
    """Requests started within one timeline bucket."""

    start: float  # monotonic
    count: int = 0
    errors: int = 0
    max_ms: float = 0.0


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


def error_name(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    if isinstance(error, ModelyardError):
        return type(error).__name__  # Unavailable, DeadlineExceeded, ...
    if isinstance(error, HttpError):
        return f"HTTP_{error.status}"
    if isinstance(error, TimeoutError):
        return "TIMEOUT"
    if isinstance(error, OSError | asyncio.IncompleteReadError):
        return "CONNECTION"
    return type(error).__name__


class Phase:
    """Issues `total` calls from a shared budget with N coroutines, none after the time cap;
    coroutine i makes its calls with calls[i % len(calls)] (its channel or connection)."""

    def __init__(self, concurrency: int, calls: Sequence[Call], bucket_s: float = 0.0) -> None:
        self.concurrency = concurrency
        self.calls = calls
        self.bucket_s = bucket_s
        self.latencies_ns: list[int] = []  # to the event that counts as the answer
        self.totals_ns: list[int] = []  # to the end of the call
        self.error_codes: dict[str, int] = {}
        self.buckets: dict[int, Bucket] = {}
        self.issued = 0
        self.total = 0
        self.capped = False
        self.started = 0.0  # monotonic
        self._started_ns = 0

    async def run(self, total: int, time_cap_s: float) -> float:
        """Runs the phase; its wall time in seconds."""
        self.total = total
        self.started, self._started_ns = time.monotonic(), time.perf_counter_ns()
        stop_at = self.started + time_cap_s
        await asyncio.gather(*(self._worker(i, stop_at) for i in range(self.concurrency)))
        return (time.perf_counter_ns() - self._started_ns) / 1e9

    async def _worker(self, index: int, stop_at: float) -> None:
        call = self.calls[index % len(self.calls)]
        while self.issued < self.total:
            if time.monotonic() >= stop_at:
                self.capped = True
                return
            sequence = self.issued
            self.issued += 1
            begin = time.perf_counter_ns()
            try:
                first = await call(sequence)
            except Exception as error:
                name = error_name(error)
                self.error_codes[name] = self.error_codes.get(name, 0) + 1
                self._record(begin, time.perf_counter_ns() - begin, ok=False)
                continue
            took = time.perf_counter_ns() - begin
            self.totals_ns.append(took)
            self.latencies_ns.append(took if first is None else first - begin)
            self._record(begin, took, ok=True)

    def _record(self, begin_ns: int, took_ns: int, ok: bool) -> None:
        if self.bucket_s <= 0:
            return
        slot = int((begin_ns - self._started_ns) / 1e9 / self.bucket_s)
        bucket = self.buckets.setdefault(slot, Bucket(self.started + slot * self.bucket_s))
        bucket.count += 1
        bucket.errors += not ok
        bucket.max_ms = max(bucket.max_ms, took_ns / 1e6)


@dataclass
class CpuUse:
    """CPU seconds used during the measured phase: by the servers, this client, the machine."""

    server_pids: list[int]
    server: float = 0.0
    client: float = 0.0
    machine: float = 0.0
    _before: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), repr=False)

    def start(self) -> CpuUse:
        self._before = (cpu_seconds(self.server_pids), time.process_time(), machine_busy_seconds())
        return self

    def stop(self) -> CpuUse:
        server, client, machine = self._before
        self.server = cpu_seconds(self.server_pids) - server
        self.client = time.process_time() - client
        self.machine = machine_busy_seconds() - machine
        return self


def summarise(phase: Phase, duration: float, cpu: CpuUse) -> dict[str, Any]:
    lat = sorted(ns / 1e6 for ns in phase.latencies_ns)
    ok = len(lat)
    result: dict[str, Any] = {
        "requests": phase.issued,
        "ok": ok,
        "errors": sum(phase.error_codes.values()),
        "error_codes": phase.error_codes,
        "capped": phase.capped,
        "duration_s": round(duration, 3),
        "throughput_rps": round(ok / duration, 2) if duration > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 3),
        "p90_ms": round(percentile(lat, 90), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(lat[-1], 3) if lat else 0.0,
        "client_cpu_pct": pct(cpu.client, duration),
        "server_cpu_pct": pct(cpu.server, duration),
        "server_cpu_ms_per_req": round(1000 * cpu.server / ok, 4) if ok else 0.0,
        # all cores together (200 = both cores of a 2-core machine busy); what neither the
        # client nor the servers used was other work on the machine, which skews the figures
        "machine_cpu_pct": pct(cpu.machine, duration),
        "other_cpu_pct": pct(max(0.0, cpu.machine - cpu.client - cpu.server), duration),
    }
    if phase.latencies_ns != phase.totals_ns:
        totals = sorted(ns / 1e6 for ns in phase.totals_ns)
        result["total_p50_ms"] = round(percentile(totals, 50), 3)
        result["total_p99_ms"] = round(percentile(totals, 99), 3)
    if phase.bucket_s > 0:
        result["timeline"] = [
            [round(b.start, 4), b.count, b.errors, round(b.max_ms, 2)]
            for _, b in sorted(phase.buckets.items())
        ]
    return result
