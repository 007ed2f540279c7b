"""`python -m bench.common.load SPEC`: one load run (see the package's docstring)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any

from bench.common.load.chain import open_chain
from bench.common.load.composer import open_run, open_stream
from bench.common.load.http import open_http
from bench.common.load.llm import open_chat_grpc, open_chat_sse
from bench.common.load.phase import CpuUse, Phase, summarise
from bench.common.load.predict import open_predict, open_predict_stream
from bench.common.load.routed import open_routed
from bench.common.load.spec import LoadSpec
from bench.common.load.target import Target

KINDS: dict[str, Callable[[LoadSpec], Awaitable[Target]]] = {
    "predict": open_predict,
    "predict_stream": open_predict_stream,
    "run": open_run,
    "stream": open_stream,
    "chain": open_chain,
    "fanout": open_chain,
    "http": open_http,
    "routed": open_routed,
    "chat_grpc": open_chat_grpc,
    "chat_sse": open_chat_sse,
}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


async def measure(spec: LoadSpec) -> dict[str, Any]:
    target = await KINDS[spec.kind](spec)
    try:
        sample = await target.check()
        # the warm-up connects every channel, and gives a balancer its first readings
        await Phase(spec.concurrency, target.calls).run(spec.warmup, spec.time_cap_s)
        gc.collect()
        gc.freeze()  # set-up garbage must not trigger collections inside the timed phase
        phase = Phase(spec.concurrency, target.calls, spec.bucket_s)
        emit({"event": "started", "at": time.monotonic()})
        cpu = CpuUse(spec.server_pids).start()
        duration = await phase.run(spec.requests, spec.time_cap_s)
        cpu.stop()
        figures = target.figures(phase.started)
    finally:
        await target.close()
    result = {**summarise(phase, duration, cpu), **figures}
    if sample:
        result["sample"] = sample
    return result


def parse(argv: list[str]) -> LoadSpec:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.common.load '<LoadSpec as JSON>'")
    data = json.loads(argv[0])
    known = {f.name for f in fields(LoadSpec)}
    if unknown := set(data) - known:
        raise SystemExit(f"unknown spec field(s): {', '.join(sorted(unknown))}")
    spec = LoadSpec(**data)
    if spec.kind not in KINDS:
        raise SystemExit(f"unknown kind {spec.kind!r}: use one of {', '.join(KINDS)}")
    return spec


def main() -> None:
    spec = parse(sys.argv[1:])
    emit({"event": "result", **asyncio.run(measure(spec))})


if __name__ == "__main__":
    main()
