"""batching_idle_paired: batching's c=1 goal with batched and unbatched interleaved call by
call.

`batching` measures its c=1 level in rounds of hundreds of requests, one model after the
other. On this shared VM a tiny model's latency moves by up to 2x between rounds with
nothing else running, so its c=1 ratios (two figures meant to be equal) swung from 0.86 to
1.05 in four runs of the same code within half an hour. Here one client calls the batched
and the unbatched model of the same worker in turn, the order alternating, so both meet
the same machine. At c=1 a closed-loop client's throughput is 1 / its mean latency, so per
round:

- throughput ratio: the unbatched model's mean latency over the batched model's;
- p50 ratio: the batched model's p50 over the unbatched model's.

For a model that streams, PredictStream is measured the same way after that, timed to its
first message: the time to first token's p50 ratio. The verdict is the median over rounds
of each round's ratios (goal: >= 0.95, <= 1.05 and <= 1.05).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common.interleaved import interleaved_round, warm_up
from bench.common.load.predict import open_predict, open_predict_stream
from bench.common.load.spec import LoadSpec
from bench.common.load.target import Target

ROUNDS = 6
SMOKE_ROUNDS, SMOKE_WARM_UP = 2, 2
WARM_UP = 30
TIMEOUT_S = 30.0
THROUGHPUT_RATIO = 0.95  # the same tolerance as `batching`'s c=1 level
P50_RATIO = 1.05
SIDES = ("batched", "unbatched")


def paired(
    address: str,
    models: dict[str, str],
    inputs: list[dict[str, Any]],
    iterations: int,
    *,
    streams: bool,
    smoke: bool,
) -> dict[str, Any]:
    """The rounds' latencies (`iterations` calls of each model a round), and with `streams`
    the rounds' times to first message of PredictStream, measured the same way after them.
    `models`: "batched" and "unbatched" -> the model's name."""
    rounds, warm_up_calls = (SMOKE_ROUNDS, SMOKE_WARM_UP) if smoke else (ROUNDS, WARM_UP)
    iterations = min(iterations, 5) if smoke else iterations

    async def both() -> dict[str, Any]:
        specs = {
            side: LoadSpec(
                "predict", address=address, model=model, inputs=inputs, deadline_s=TIMEOUT_S
            )
            for side, model in models.items()
        }
        shape = (rounds, iterations, warm_up_calls)
        measured = {"iterations": iterations, "unary": await _measure(open_predict, specs, *shape)}
        if streams:
            measured["streamed"] = await _measure(open_predict_stream, specs, *shape)
        return measured

    return asyncio.run(both())


async def _measure(
    open_target: Callable[[LoadSpec], Awaitable[Target]],
    specs: dict[str, LoadSpec],
    rounds: int,
    iterations: int,
    warm_up_calls: int,
) -> dict[str, Any]:
    """Seconds per call (or to a stream's first message), per round and side."""
    # the load generator's own calls (bench/common/load): serialised once, raw bytes
    targets = {side: await open_target(specs[side]) for side in SIDES}
    try:
        for target in targets.values():
            await target.check()  # a fast wrong answer is no result
        calls = {side: target.calls[0] for side, target in targets.items()}
        errors = dict.fromkeys(SIDES, 0)
        await warm_up(calls, SIDES, warm_up_calls)
        per_round = [
            await interleaved_round(calls, SIDES, iterations, errors) for _ in range(rounds)
        ]
        return {"rounds": per_round, "errors": errors}
    finally:
        for target in targets.values():
            await target.close()


def round_figures(latencies: dict[str, list[float]]) -> dict[str, float]:
    """One round's ratios, batched against unbatched."""
    batched, unbatched = latencies["batched"], latencies["unbatched"]
    return {
        "throughput_ratio": round(statistics.fmean(unbatched) / statistics.fmean(batched), 4),
        "p50_ratio": round(statistics.median(batched) / statistics.median(unbatched), 4),
        "batched_p50_ms": round(1000 * statistics.median(batched), 4),
        "unbatched_p50_ms": round(1000 * statistics.median(unbatched), 4),
    }


def answered_rounds(part: dict[str, Any]) -> list[dict[str, float]]:
    """Each round's figures; a round where a side answered nothing has none (its errors
    fail the verdict)."""
    return [round_figures(r) for r in part["rounds"] if all(r.values())]


def median_of(rounds: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in rounds]
    return round(statistics.median(values), 4) if values else None


def record(measured: dict[str, Any], *, task: str, checkpoint: str) -> dict[str, Any]:
    unary = answered_rounds(measured["unary"])
    throughput, p50 = median_of(unary, "throughput_ratio"), median_of(unary, "p50_ratio")
    checks = {
        "no errors": not any(measured["unary"]["errors"].values()),
        f"throughput ratio >= {THROUGHPUT_RATIO:g}": throughput is not None
        and throughput >= THROUGHPUT_RATIO,
        f"p50 ratio <= {P50_RATIO:g}": p50 is not None and p50 <= P50_RATIO,
    }
    goal = f"throughput >= {THROUGHPUT_RATIO:g}x, p50 <= {P50_RATIO:g}x"
    line: dict[str, Any] = {
        "bench": "batching_idle_paired",
        "scenario": f"{checkpoint} {task}, c=1, batched / unbatched interleaved",
        "task": task,
        "concurrency": 1,
        "rounds": len(unary),
        "iterations_per_round": measured["iterations"],
        "throughput_ratio": throughput,
        "p50_ratio": p50,
        "batched": {"p50_ms": median_of(unary, "batched_p50_ms")},
        "baseline": {"name": "batching off", "p50_ms": median_of(unary, "unbatched_p50_ms")},
        "throughput_ratio_rounds": [r["throughput_ratio"] for r in unary],
        "p50_ratio_rounds": [r["p50_ratio"] for r in unary],
        "errors": measured["unary"]["errors"],
    }
    if "streamed" in measured:
        # PredictStream timed to its first message: the p50 ratio is the time to first token's
        streamed = answered_rounds(measured["streamed"])
        ttft = median_of(streamed, "p50_ratio")
        checks["no stream errors"] = not any(measured["streamed"]["errors"].values())
        checks[f"ttft p50 ratio <= {P50_RATIO:g}"] = ttft is not None and ttft <= P50_RATIO
        goal += f", streamed time to first token p50 <= {P50_RATIO:g}x"
        line["stream_ttft"] = {
            "ttft_p50_ratio": ttft,
            "batched_p50_ms": median_of(streamed, "batched_p50_ms"),
            "unbatched_p50_ms": median_of(streamed, "unbatched_p50_ms"),
            "ttft_p50_ratio_rounds": [r["p50_ratio"] for r in streamed],
            "errors": measured["streamed"]["errors"],
        }
    line["goal"] = f"batching on vs off at c=1, calls interleaved: {goal} (medians over rounds)"
    line["checks"] = checks
    line["pass"] = all(checks.values())
    return line
