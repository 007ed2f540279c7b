"""One measurement round: N calls at concurrency c, directly with httpx or through the
routed client, each in a fresh event loop with its own clients (warmed up first), timed
per call; CPU of this process and of the API server over the round."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common.cpu import CpuWindow
from bench.common.stats import latency_summary
from bench.http_api.api_server import ANSWER
from modelyard.routed_client import RoutedClient
from modelyard_server.http_api.caller import HttpApiCaller
from modelyard_server.http_api.settings import HttpApiSettings

PROMPT = "What is the answer?"
BODY_TEMPLATE = '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}'


@dataclass(frozen=True)
class Setup:
    control_plane: str
    model: str
    api_url: str
    api_pid: int


@dataclass(frozen=True)
class Level:
    concurrency: int
    requests: int
    warmup: int


Call = Callable[[], Awaitable[None]]


def measure(kind: str, setup: Setup, level: Level) -> dict[str, Any]:
    """A load result of `kind` ("direct" or "routed") at `level`."""
    return asyncio.run(_round(kind, setup, level))


async def _round(kind: str, setup: Setup, level: Level) -> dict[str, Any]:
    opened = _direct(setup) if kind == "direct" else _routed(setup)
    call, close = await opened
    try:
        for _ in range(level.warmup):
            await call()
        return await _timed(call, setup, level)
    finally:
        await close()


async def _direct(setup: Setup) -> tuple[Call, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30)
    body = json.dumps({"prompt": PROMPT, "temperature": 1.0}).encode()
    headers = {"content-type": "application/json"}

    async def call() -> None:
        response = await client.post(setup.api_url, content=body, headers=headers)
        response.raise_for_status()
        answer = response.json()["data"]["items"][0]["attributes"]["answer"]
        if answer != ANSWER:
            raise AssertionError(f"the API answered {answer!r}")

    return call, client.aclose


async def _routed(setup: Setup) -> tuple[Call, Callable[[], Awaitable[None]]]:
    caller = HttpApiCaller(HttpApiSettings(allowed_networks=["127.0.0.1/32"]))
    client = RoutedClient([setup.control_plane], outside_apis=caller, timeout=30)

    async def call() -> None:
        prediction = await client.predict(setup.model, prompt=PROMPT)
        if prediction.outputs["text"] != ANSWER:
            raise AssertionError(f"the API answered {prediction.outputs!r}")

    async def close() -> None:
        await client.close()
        await caller.aclose()

    return call, close


async def _timed(call: Call, setup: Setup, level: Level) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    left = level.requests

    async def one_coroutine() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            try:
                await call()
            except Exception as error:  # counted and reported, never hidden
                name = type(error).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            latencies.append((time.perf_counter() - started) * 1000.0)

    window = CpuWindow({"client": [os.getpid()], "server": [setup.api_pid]}).start()
    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(one_coroutine() for _ in range(level.concurrency)))
    wall = time.perf_counter() - started
    client_cpu_s = time.process_time() - cpu_before
    cpu = window.stop()
    ok = len(latencies)
    summary = latency_summary(latencies)
    return {
        "requests": level.requests,
        "ok": ok,
        "errors": sum(errors.values()),
        "error_codes": errors,
        "capped": False,
        "p50_ms": summary["p50_ms"],
        "p90_ms": summary["p90_ms"],
        "p99_ms": summary["p99_ms"],
        "mean_ms": summary["mean_ms"],
        "throughput_rps": round(ok / wall, 1) if wall > 0 else 0.0,
        "client_cpu_ms_per_req": round(1000.0 * client_cpu_s / max(ok, 1), 4),
        "server_cpu_ms_per_req": round(
            cpu["server_cpu_pct"] / 100.0 * cpu["window_s"] * 1000.0 / max(ok, 1), 4
        ),
        **{k: cpu[k] for k in ("client_cpu_pct", "server_cpu_pct", "machine_cpu_pct")},
        "other_cpu_pct": cpu["other_cpu_pct"],
    }
