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

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

PROMPT = "The weather is"  # bench.worker.models.GPT2_INPUTS[0]
STEP_TOKENS = 32
BLOCK = 10  # calls per block; the kinds of call alternate block by block, so drift cancels

Call = Callable[[], object]


def main() -> None:
    args = _parser().parse_args()
    import torch

    from modelyard.model import LoadContext, Request
    from workers.hf.pipeline_model import PipelineModel

    torch.set_num_threads(1)  # as a worker runs a model (`threads: 1`)
    model = PipelineModel("text-generation")
    model.load(LoadContext(source=str(args.checkpoint), device="cpu"))
    pipe = model.pipeline

    def generation(tokens: int) -> Call:
        parameters = {**model.default_parameters, "max_new_tokens": tokens, "do_sample": False}
        request = Request(inputs={"text": PROMPT}, parameters=parameters)
        return lambda: model.predict([request])

    def through_generate(tokens: int) -> Call:
        """The adapter's work with generate in place of its loop: tokenize, generate, decode."""
        kwargs = {"max_new_tokens": tokens, "do_sample": False}
        kwargs["pad_token_id"] = pipe.tokenizer.pad_token_id

        def call() -> object:
            prompt = pipe.tokenizer(PROMPT, return_tensors="pt")
            output = pipe.model.generate(**prompt, **kwargs)
            return pipe.tokenizer.batch_decode(output[:, prompt["input_ids"].shape[1] :])

        return call

    one = generation(1)
    p50 = p50s_ms(
        {
            "hot": (one, 0.0),
            "after_pause": (one, args.pause_ms / 1000.0),
            "many": (generation(STEP_TOKENS), 0.0),
            "generate_one": (through_generate(1), 0.0),
            "generate_many": (through_generate(STEP_TOKENS), 0.0),
        },
        args.calls,
    )
    figures = {
        "pause_ms": args.pause_ms,
        "one_token_hot_p50_ms": p50["hot"],
        "one_token_after_pause_p50_ms": p50["after_pause"],
        "decode_step_ms": round((p50["many"] - p50["hot"]) / (STEP_TOKENS - 1), 3),
        f"{STEP_TOKENS}_tokens_p50_ms": p50["many"],
        "generate": {
            "one_token_p50_ms": p50["generate_one"],
            f"{STEP_TOKENS}_tokens_p50_ms": p50["generate_many"],
        },
        "calls_each": args.calls,
    }
    print(json.dumps(figures))


def p50s_ms(kinds: Mapping[str, tuple[Call, float]], calls: int) -> dict[str, float]:
    """Each kind's median wall time in ms over `calls` calls, each call after its kind's
    pause in seconds; the kinds take turns a block at a time, after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for call, _ in kinds.values():
        for _ in range(min(BLOCK, calls)):
            call()
    for done in range(0, calls, BLOCK):
        for name, (call, pause) in kinds.items():
            for _ in range(min(BLOCK, calls - done)):
                if pause:
                    time.sleep(pause)
                started = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.worker.first_token_floor")
    parser.add_argument("checkpoint", type=_checkpoint, help="a text-generation checkpoint")
    parser.add_argument("pause_ms", type=_at_least(0.0, float), help="idle ms before a call")
    parser.add_argument("calls", type=_at_least(1, int), help="calls of each kind")
    return parser


def _checkpoint(text: str) -> Path:
    path = Path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a checkpoint folder (no config.json)")
    return path


def _at_least(least: float, kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is below {least:g}")
        return value

    return parse


if __name__ == "__main__":
    main()
