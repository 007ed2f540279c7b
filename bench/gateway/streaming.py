"""gateway_streaming: streamed chat through the gateway vs the worker's PredictStream.

Both sides ask the same thing: the chat model, one user message, `max_tokens` =
`min_new_tokens` = the run's `tokens` (every answer is that long, greedy), streamed. The
gateway side is an HTTP/1.1 client reading server-sent events (`chat_sse`, with the usage
chunk); the baseline a gRPC client of the worker (`chat_grpc`). Time to first token is the
p50 to the first chunk with text; tokens per second are the measured phase's completion
tokens (from the answers' usage) over its wall time. The worker runs one generation at a
time on its model's thread, so at c=16 the streams queue there: tokens per second say
whether the gateway slows the whole down, time to first token includes the queue.
"""

from __future__ import annotations

import math
from typing import Any

from bench.common.load.driver import Level
from bench.common.stats import clean, ratio
from bench.gateway.run import Run, alternating
from bench.gateway.stack import MODEL, GatewayStack

MESSAGES = [{"role": "user", "content": "Tell me a story about a quiet harbour."}]
LEVELS = (Level(1, 40, 4, 60.0), Level(16, 96, 16, 120.0))
TTFT_ADDED_GOAL_MS = 2.0  # at c=1
TOKENS_RATIO_GOAL = 0.95  # at c=16: at most 5% fewer tokens per second


def streaming(run: Run, stack: GatewayStack) -> None:
    asked = {"max_tokens": run.tokens, "min_new_tokens": run.tokens}
    common: dict[str, Any] = {
        "model": MODEL, "inputs": [{"messages": MESSAGES}], "parameters": asked,
        "deadline_s": 120.0,
    }  # fmt: skip
    for level in LEVELS:
        at = run.level(level)
        specs = {
            "gateway": at.spec(kind="chat_sse", url=stack.chat_url, **common,
                               server_pids=[stack.worker.pid, stack.gateway.pid]),
            "direct": at.spec(kind="chat_grpc", address=stack.worker.address, **common,
                              server_pids=[stack.worker.pid]),
        }  # fmt: skip
        results = alternating(
            {name: run.measurer(spec) for name, spec in specs.items()}, run.rounds
        )
        run.recorder.emit(record(level.concurrency, results["gateway"], results["direct"], run))


def record(
    concurrency: int, gateway: dict[str, Any], direct: dict[str, Any], run: Run
) -> dict[str, Any]:
    added = {q: round(gateway[q] - direct[q], 3) for q in ("p50_ms", "p90_ms", "p99_ms")}
    tokens = ratio(gateway["tokens_per_s"], direct["tokens_per_s"])
    every_answer = {side["sample"]["usage"]["completion_tokens"] for side in (gateway, direct)}
    checks = {
        "no errors": clean(gateway) and clean(direct),
        f"every answer is {run.tokens} tokens": every_answer == {run.tokens},
    }
    if concurrency == 1:
        goal = f"time to first token at most {TTFT_ADDED_GOAL_MS} ms more than direct (p50)"
        checks[goal] = added["p50_ms"] <= TTFT_ADDED_GOAL_MS
    else:
        goal = f"tokens per second at least {TOKENS_RATIO_GOAL}x direct"
        checks[goal] = (tokens or -math.inf) >= TOKENS_RATIO_GOAL
    return {
        "bench": "gateway_streaming",
        "scenario": f"streamed chat, c={concurrency}: gateway (SSE) vs the worker's PredictStream",
        "concurrency": concurrency,
        "model": f"{MODEL}: {'stand-in' if run.smoke else 'tiny-gpt2-chat'} (llm/v1/chat), "
        f"{run.tokens} tokens per answer",
        "gateway": {"name": "POST /v1/chat/completions, stream: true", **_shown(gateway)},
        "baseline": {"name": "Predict.PredictStream of the worker", **_shown(direct)},
        "ttft_added_ms": added,
        "tokens_per_s_ratio": tokens,
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    """A side's figures (p50_ms etc. are the time to first token), without the checked
    answer's sample."""
    return {key: value for key, value in result.items() if key != "sample"}
