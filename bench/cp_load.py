"""Load through `RoutedClient`: N coroutines share one client (one balancer, one channel per
worker) and call one model until a request budget is spent or a time cap passed.

It runs in its own process so its CPU is measured on its own and a worker killed by the
bench cannot take the measuring side with it. Protocol on stdout, one JSON object a line:

    {"event": "started", "at": <time.monotonic()>}     the measured phase begins (after warm-up)
    {"event": "result", ...}                            counts, latency percentiles, CPU use

`time.monotonic()` is CLOCK_MONOTONIC, one clock for every process on the machine, so the
bench can put the client's timeline and its own kill or change timestamps side by side.

    python -m bench.cp_load '{"control_planes": ["127.0.0.1:50050"], "model": "slow"}'
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc.aio

from bench.loadgen import percentile
from modelyard.errors import ModelyardError
from modelyard.routed_client import RoutedClient


@dataclass
class LoadSpec:
    control_planes: list[str]
    model: str
    policy: str = "p2c"
    selector: str = ""
    concurrency: int = 16
    requests: int = 3000
    warmup: int = 200
    time_cap_s: float = 20.0
    deadline_s: float = 10.0
    # Width of the timeline buckets (by request start) in seconds; 0 keeps no timeline.
    bucket_s: float = 0.0


@dataclass
class Bucket:
    """Requests started within one timeline bucket."""

    start: float  # monotonic
    count: int = 0
    errors: int = 0
    max_ms: float = 0.0


class RetryCounter(logging.Handler):
    """Counts RoutedClient's retries (it logs each at INFO); the client exposes no counter,
    and a retry is exactly what the failure scenario wants to see happen."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("%s unavailable for a call to"):
            self.at.append(time.monotonic())


@dataclass
class Phase:
    """One phase's shared request budget: exactly `total` requests are issued however the
    coroutines interleave, and none is issued after the time cap."""

    spec: LoadSpec
    client: RoutedClient
    total: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    buckets: dict[int, Bucket] = field(default_factory=dict)
    issued: int = 0
    capped: bool = False
    started: float = 0.0

    async def run(self) -> float:
        self.started = time.monotonic()
        stop_at = self.started + self.spec.time_cap_s
        await asyncio.gather(*(self._worker(stop_at) for _ in range(self.spec.concurrency)))
        return time.monotonic() - self.started

    async def _worker(self, stop_at: float) -> None:
        while self.issued < self.total:
            begin = time.monotonic()
            if begin >= stop_at:
                self.capped = True
                return
            self.issued += 1
            ok = await self._call(self.issued)
            self._record(begin, (time.monotonic() - begin) * 1000.0, ok)

    async def _call(self, index: int) -> bool:
        try:
            await self.client.predict(self.spec.model, x=index, timeout=self.spec.deadline_s)
        except (ModelyardError, grpc.aio.AioRpcError) as error:
            kind = type(error).__name__
            self.errors[kind] = self.errors.get(kind, 0) + 1
            return False
        return True

    def _record(self, begin: float, ms: float, ok: bool) -> None:
        if ok:
            self.latencies_ms.append(ms)
        if self.spec.bucket_s > 0:
            slot = int((begin - self.started) / self.spec.bucket_s)
            start = self.started + slot * self.spec.bucket_s
            bucket = self.buckets.setdefault(slot, Bucket(start))
            bucket.count += 1
            bucket.errors += not ok
            bucket.max_ms = max(bucket.max_ms, ms)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


async def measure(spec: LoadSpec) -> dict[str, Any]:
    retries = RetryCounter()
    logging.getLogger("modelyard.routed_client").addHandler(retries)
    logging.getLogger("modelyard.routed_client").setLevel(logging.INFO)
    client = RoutedClient(spec.control_planes, policy=spec.policy, selector=spec.selector)
    try:
        # the warm-up connects every channel and gives the balancer latency readings
        await Phase(spec, client, spec.warmup).run()
        retries.at.clear()
        gc.collect()
        gc.freeze()  # set-up garbage must not trigger collections inside the timed phase
        phase = Phase(spec, client, spec.requests)
        cpu = time.process_time()
        emit({"event": "started", "at": time.monotonic()})
        duration = await phase.run()
        cpu = time.process_time() - cpu
        endpoints = [e.worker_id for e in client.endpoints(spec.model)]
    finally:
        await client.close()
    return summarise(phase, duration, cpu, retries.at, endpoints)


def summarise(
    phase: Phase, duration: float, cpu_s: float, retries_at: list[float], endpoints: list[str]
) -> dict[str, Any]:
    lat = sorted(phase.latencies_ms)
    ok = len(lat)
    return {
        "event": "result",
        "policy": phase.spec.policy,
        "selector": phase.spec.selector,
        "concurrency": phase.spec.concurrency,
        "ok": ok,
        "errors": sum(phase.errors.values()),
        "error_kinds": phase.errors,
        "retries": len(retries_at),
        "retries_at": [round(t, 4) for t in retries_at[:1000]],
        "capped": phase.capped,
        "duration_s": round(duration, 3),
        "throughput_rps": round(ok / duration, 1) if duration > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else 0.0,
        # one core = 100: near 100 the client, not the servers, would limit the load
        "client_cpu_pct": round(100 * cpu_s / duration, 1) if duration > 0 else 0.0,
        "endpoints_at_end": endpoints,
        "timeline": [
            [round(b.start, 4), b.count, b.errors, round(b.max_ms, 2)]
            for _, b in sorted(phase.buckets.items())
        ],
    }


def main() -> None:
    spec = LoadSpec(**json.loads(sys.argv[1]))
    emit(asyncio.run(measure(spec)))


if __name__ == "__main__":
    main()
