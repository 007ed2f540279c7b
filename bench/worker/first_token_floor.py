"""The floor under a streamed first token: the worker's own text-generation adapter (the same
tokenizer, decoding loop and checkpoint), called in process, with no gRPC, no event loop and
no other thread.

    python -m bench.worker.first_token_floor CHECKPOINT PAUSE_MS CALLS

Prints one JSON line of p50s in ms: a 1-token generation called back to back (`hot`) and
after sleeping PAUSE_MS before each call (`after_pause`: at c=1 a worker's model thread
waits out every round trip between two requests, and on a shared VM an idle vCPU comes back
to cold caches), and one decoding step (a 32-token generation minus a 1-token one, over 31,
back to back). Beside them, the same two generations through transformers' `model.generate`
(what the worker called before it decoded in a loop of its own, workers/hf/tasks/decoding.py).
The streaming bench passes the round trip it measured as the pause: its TTFT
cannot beat that round trip plus `after_pause`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

PROMPT = "The weather is"  # bench.worker.models.GPT2_INPUTS[0]
STEP_TOKENS = 32
BLOCK = 10  # calls per block; the kinds of call alternate block by block, so drift cancels


def main() -> None:
    checkpoint, pause_ms, calls = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    import torch

    from modelyard.model import LoadContext, Request
    from workers.hf.pipeline_model import PipelineModel

    torch.set_num_threads(1)  # as a worker runs a model (`threads: 1`)
    model = PipelineModel("text-generation")
    model.load(LoadContext(source=checkpoint, device="cpu"))

    def generation(tokens: int) -> Callable[[], object]:
        parameters = {**model.default_parameters, "max_new_tokens": tokens, "do_sample": False}
        request = Request(inputs={"text": PROMPT}, parameters=parameters)
        return lambda: model.predict([request])

    pipe = model.pipeline

    def through_generate(tokens: int) -> Callable[[], object]:
        """The adapter's work with generate in place of its loop: tokenize, generate, decode."""
        kwargs = {"max_new_tokens": tokens, "do_sample": False}
        kwargs["pad_token_id"] = pipe.tokenizer.pad_token_id

        def call() -> object:
            prompt = pipe.tokenizer(PROMPT, return_tensors="pt")
            output = pipe.model.generate(**prompt, **kwargs)
            return pipe.tokenizer.batch_decode(output[:, prompt["input_ids"].shape[1] :])

        return call

    one, many = generation(1), generation(STEP_TOKENS)
    pause = pause_ms / 1000.0
    kinds: dict[str, tuple[Callable[[], object], float]] = {
        "hot": (one, 0.0),
        "after_pause": (one, pause),
        "many": (many, 0.0),
        "generate_one": (through_generate(1), 0.0),
        "generate_many": (through_generate(STEP_TOKENS), 0.0),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    block = min(BLOCK, calls)
    for call, _ in kinds.values():
        for _ in range(block):  # warm-up
            call()
    for _ in range(max(1, calls // block)):
        for name, (call, wait) in kinds.items():
            for _ in range(block):
                if wait:
                    time.sleep(wait)
                started = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - started))
    p50 = {name: statistics.median(values) for name, values in times.items()}
    print(
        json.dumps(
            {
                "pause_ms": pause_ms,
                "one_token_hot_p50_ms": round(p50["hot"], 3),
                "one_token_after_pause_p50_ms": round(p50["after_pause"], 3),
                "decode_step_ms": round((p50["many"] - p50["hot"]) / (STEP_TOKENS - 1), 3),
                f"{STEP_TOKENS}_tokens_p50_ms": round(p50["many"], 3),
                "generate": {
                    "one_token_p50_ms": round(p50["generate_one"], 3),
                    f"{STEP_TOKENS}_tokens_p50_ms": round(p50["generate_many"], 3),
                },
                "calls_each": len(times["hot"]),
            }
        )
    )


if __name__ == "__main__":
    main()
