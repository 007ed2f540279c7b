"""predict_many: one worker's Echo called as unary Predicts vs as PredictMany stream messages.

The composer sends its untraced node calls as PredictMany messages (`modelyard.multiplex`,
`workers.predict_many`) because a unary call's set-up costs grpc.aio more than its
messages. This measures that choice on a real worker process, against its baseline in the
same run: the same requests as unary Predict calls. Each round runs a block of each path
on the same worker, the order alternating; per block, the latency and throughput the
client sees and the CPU per call of the worker process and of the client (this process,
which makes the calls as the composer would: through `PredictMany`). Reported: the medians
over rounds and the ratios PredictMany / unary. Informational (no goal of its own: the
goals it serves are the per-node and seed-graph lines of the composer bench).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio
import psutil

from bench.common.cpu import process_cpu_seconds
from bench.common.servers import serving, worker, write_worker_config
from bench.common.stats import ratio
from bench.worker.models import ECHO_INPUTS, ECHO_MODEL
from bench.worker.run import Run
from modelyard.client import MAX_MESSAGE_BYTES, build_request
from modelyard.multiplex import PredictMany
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc

LEVELS = ((1, 1500), (16, 6000))  # (callers, calls per block)
SMOKE_CALLS = 20
ROUNDS = 5
TIMEOUT_S = 10.0
PATHS = ("unary", "predict_many")

Call = Callable[[pb.PredictRequest], Awaitable[pb.PredictResponse]]


def predict_many(run: Run) -> None:
    config = write_worker_config(run.workdir / "many-worker.yaml", ECHO_MODEL)
    rounds = 1 if run.smoke else ROUNDS
    with serving("many-worker", worker(config), run.workdir) as served:
        for callers, calls in LEVELS:
            blocks = asyncio.run(
                _measure(
                    served.address, served.pid, callers, SMOKE_CALLS if run.smoke else calls, rounds
                )
            )
            run.recorder.emit(record(blocks, callers))


async def _measure(
    address: str, pid: int, callers: int, calls: int, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    request = build_request(pb.PredictRequest, "echo", ECHO_INPUTS[0], None)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = predict_pb2_grpc.PredictStub(channel)
        many = PredictMany(stub, max_receive_bytes=MAX_MESSAGE_BYTES)
        paths: dict[str, Call] = {
            "unary": lambda r: stub.Predict(r, timeout=TIMEOUT_S),
            "predict_many": lambda r: many.predict(r, TIMEOUT_S),
        }
        expected = await paths["unary"](request)
        for call in paths.values():  # warm: channel, stream, worker
            assert await call(request) == expected, "the two paths answer differently"
            await _block(call, request, callers, min(calls, 200), psutil.Process(pid))
        blocks: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
        worker = psutil.Process(pid)
        for i in range(rounds):
            for path in PATHS if i % 2 == 0 else reversed(PATHS):
                blocks[path].append(await _block(paths[path], request, callers, calls, worker))
        return blocks


async def _block(
    call: Call, request: pb.PredictRequest, callers: int, calls: int, worker: psutil.Process
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def caller(n: int) -> None:
        nonlocal errors
        for _ in range(n):
            started = time.perf_counter()
            try:
                await call(request)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    worker_before, client_before = process_cpu_seconds(worker), _own_cpu()
    started = time.perf_counter()
    await asyncio.gather(*(caller(calls // callers) for _ in range(callers)))
    elapsed = time.perf_counter() - started
    done = max(1, len(latencies))
    return {
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "throughput_rps": len(latencies) / elapsed,
        "worker_cpu_us_per_call": 1e6 * (process_cpu_seconds(worker) - worker_before) / done,
        "client_cpu_us_per_call": 1e6 * (_own_cpu() - client_before) / done,
        "errors": errors,
    }


def record(blocks: dict[str, list[dict[str, Any]]], callers: int) -> dict[str, Any]:
    keys = ("p50_ms", "throughput_rps", "worker_cpu_us_per_call", "client_cpu_us_per_call")
    summary = {
        path: {key: _median([b[key] for b in blocks[path]]) for key in keys} for path in PATHS
    }
    errors = sum(b["errors"] for path in PATHS for b in blocks[path])
    checks = {"no errors": errors == 0}
    return {
        "bench": "predict_many",
        "scenario": f"Echo on one worker, c={callers}: unary Predict vs PredictMany messages",
        "concurrency": callers,
        "rounds": len(blocks["unary"]),
        "baseline": {"name": "unary Predict, one call each", **summary["unary"]},
        "predict_many": {
            "name": "PredictMany: calls as messages of the channel's streams",
            **summary["predict_many"],
        },
        "ratios": {
            key: _ratio(summary["predict_many"][key], summary["unary"][key]) for key in keys
        },
        "errors": errors,
        "goal": "informational (pass = no errors): what the composer's transport saves a call",
        "checks": checks,
        "pass": all(checks.values()),
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else ratio(value, baseline)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None
