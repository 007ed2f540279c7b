"""The load generator: runs in its own process so its CPU never counts as the server's.

N coroutines share one grpc.aio event loop and K channels (coroutine i uses channel i % K)
and call one unary method until a fixed number of requests completed or a time cap passed,
after a warm-up at the same concurrency. Requests are serialised once up front and
responses are kept as bytes (a few are parsed and checked), so the client spends its CPU on
gRPC itself, not on protobuf: on a 2-core machine every client cycle is taken from the server.

    python -m bench.loadgen '{"address": "127.0.0.1:50051", "model": "echo", ...}'

prints one JSON object: counts, latency percentiles (ms), throughput and CPU use.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio
import psutil

from modelyard.v1 import predict_pb2 as pb
from modelyard.values import fill_value_map, from_value_map

PREDICT = "/modelyard.v1.Predict/Predict"
RawCall = Callable[..., Any]  # a grpc.aio unary-unary multicallable on bytes


@dataclass
class LoadSpec:
    address: str
    model: str
    # Requests cycle through these inputs (several texts, so a batch is not N copies of one).
    inputs: list[dict[str, Any]]
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 1
    requests: int = 1000
    warmup: int = 200
    time_cap_s: float = 20.0
    channels: int = 1
    deadline_s: float = 10.0
    # CPU time of this process is read around the measured phase (0: skip).
    server_pid: int = 0
    # Check that outputs equal inputs (the echo servers), else only that outputs exist.
    expect_echo: bool = False


@dataclass
class LoadResult:
    ok: int
    errors: int
    error_codes: dict[str, int]
    capped: bool
    duration_s: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_pct: float
    server_cpu_pct: float
    server_cpu_ms_per_req: float
    # All cores together (200 = both cores of a 2-core machine busy); what neither the
    # client nor the server used was other work on the machine, which skews the figures.
    machine_cpu_pct: float
    other_cpu_pct: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was really observed, no interpolation."""
    if not sorted_values:
        return 0.0  # no successful request: the error count says so
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_requests(spec: LoadSpec) -> list[bytes]:
    payloads = []
    for inputs in spec.inputs:
        request = pb.PredictRequest(model=spec.model)
        fill_value_map(request.inputs, inputs)
        fill_value_map(request.parameters, spec.parameters)
        payloads.append(request.SerializeToString())
    return payloads


def check_response(spec: LoadSpec, raw: bytes, inputs: dict[str, Any]) -> None:
    response = pb.PredictResponse.FromString(raw)
    outputs = from_value_map(response.outputs)
    if spec.expect_echo and outputs != inputs:
        raise AssertionError(f"echo mismatch: sent {inputs!r}, got {outputs!r}")
    if not outputs:
        raise AssertionError("a response without outputs")


class Runner:
    """Issues requests from a shared budget; one instance per phase (warm-up, measured).

    The coroutines share one counter, so the phase issues exactly `total` requests however
    they interleave, and each stops issuing once the time cap has passed.
    """

    def __init__(self, spec: LoadSpec, calls: list[RawCall], payloads: list[bytes]) -> None:
        self.spec = spec
        self.calls = calls
        self.payloads = payloads
        self.latencies_ns: list[int] = []
        self.error_codes: dict[str, int] = {}
        self.issued = 0
        self.total = 0
        self.stop_at = 0.0
        self.capped = False

    async def run(self, total: int, time_cap_s: float) -> float:
        self.total, self.stop_at = total, time.monotonic() + time_cap_s
        started = time.perf_counter()
        workers = (self._worker(i) for i in range(self.spec.concurrency))
        await asyncio.gather(*workers)
        return time.perf_counter() - started

    async def _worker(self, index: int) -> None:
        call = self.calls[index % len(self.calls)]
        while self.issued < self.total:
            if time.monotonic() >= self.stop_at:
                self.capped = True
                return
            payload = self.payloads[self.issued % len(self.payloads)]
            self.issued += 1
            begin = time.perf_counter_ns()
            try:
                await call(payload, timeout=self.spec.deadline_s)
            except grpc.aio.AioRpcError as error:
                name = error.code().name
                self.error_codes[name] = self.error_codes.get(name, 0) + 1
                continue
            self.latencies_ns.append(time.perf_counter_ns() - begin)


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


async def verify(spec: LoadSpec, call: RawCall, payloads: list[bytes]) -> None:
    """Parses one response per distinct request: a fast wrong answer is no result."""
    for payload, inputs in zip(payloads, spec.inputs, strict=True):
        check_response(spec, await call(payload, timeout=spec.deadline_s), inputs)


async def measure(spec: LoadSpec) -> LoadResult:
    options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
    channels = [
        grpc.aio.insecure_channel(spec.address, options=options) for _ in range(spec.channels)
    ]
    try:
        calls: list[RawCall] = [ch.unary_unary(PREDICT) for ch in channels]  # bytes in/out
        payloads = build_requests(spec)
        await verify(spec, calls[0], payloads)
        await Runner(spec, calls, payloads).run(spec.warmup, spec.time_cap_s)
        return await measured_phase(spec, calls, payloads)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


async def measured_phase(spec: LoadSpec, calls: list[RawCall], payloads: list[bytes]) -> LoadResult:
    server = psutil.Process(spec.server_pid) if spec.server_pid else None
    runner = Runner(spec, calls, payloads)
    gc.collect()
    gc.freeze()  # setup garbage must not trigger collections inside the timed loop
    server_cpu, client_cpu, machine = (
        cpu_seconds(server),
        time.process_time(),
        machine_busy_seconds(),
    )
    duration = await runner.run(spec.requests, spec.time_cap_s)
    cpu = CpuUse(
        server=cpu_seconds(server) - server_cpu,
        client=time.process_time() - client_cpu,
        machine=machine_busy_seconds() - machine,
    )
    return summarise(runner, duration, cpu)


@dataclass
class CpuUse:
    """CPU seconds used during the measured phase."""

    server: float
    client: float
    machine: float


def pct(seconds: float, duration: float) -> float:
    return round(100 * seconds / duration, 1) if duration > 0 else 0.0


def summarise(runner: Runner, duration: float, cpu: CpuUse) -> LoadResult:
    lat = sorted(ns / 1e6 for ns in runner.latencies_ns)
    ok = len(lat)
    return LoadResult(
        ok=ok,
        errors=sum(runner.error_codes.values()),
        error_codes=runner.error_codes,
        capped=runner.capped,
        duration_s=round(duration, 3),
        throughput_rps=round(ok / duration, 1) if duration > 0 else 0.0,
        p50_ms=round(percentile(lat, 50), 3),
        p90_ms=round(percentile(lat, 90), 3),
        p99_ms=round(percentile(lat, 99), 3),
        max_ms=round(lat[-1], 3) if lat else 0.0,
        client_cpu_pct=pct(cpu.client, duration),
        server_cpu_pct=pct(cpu.server, duration),
        server_cpu_ms_per_req=round(1000 * cpu.server / ok, 4) if ok else 0.0,
        machine_cpu_pct=pct(cpu.machine, duration),
        other_cpu_pct=pct(max(0.0, cpu.machine - cpu.client - cpu.server), duration),
    )


def main() -> None:
    spec = LoadSpec(**json.loads(sys.argv[1]))
    result = asyncio.run(measure(spec))
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
