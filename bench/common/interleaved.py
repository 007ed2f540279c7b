"""Calls to several targets in turn, one client, the order rotating: each target meets the
same machine, call by call. On this shared VM the same work's cost drifts by a third within
a minute, so figures taken in rounds of one target after another can differ by more than
the effect measured (bench/README: "Composer: per hop", batching's c=1 verdict)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import grpc.aio

from bench.common.load.target import Call


async def warm_up(calls: Mapping[str, Call], order: Sequence[str], count: int) -> None:
    for i in range(count):
        for name in order:
            await calls[name](i)


async def interleaved_round(
    calls: Mapping[str, Call], order: Sequence[str], iterations: int, errors: dict[str, int]
) -> dict[str, list[float]]:
    """Seconds per call of each target (to its answer's event when the call returns one,
    as a stream's first message); a failed call counts in `errors` and has no figure."""
    latencies: dict[str, list[float]] = {name: [] for name in order}
    for i in range(iterations):
        for k in range(len(order)):  # the order rotates: none always goes first
            name = order[(i + k) % len(order)]
            started = time.perf_counter_ns()
            try:
                answered = await calls[name](i)
            except grpc.aio.AioRpcError:
                errors[name] += 1
                continue
            latencies[name].append(((answered or time.perf_counter_ns()) - started) / 1e9)
    return latencies
