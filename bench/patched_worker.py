"""The real worker with what-if changes patched in, to size a cost before fixing it.

    python -m bench.patched_worker --variants inline,nometrics --config W.yaml --port-file P

This is an experiment harness, not a fix: each variant monkeypatches worker internals
(and is only as valid as those internals are unchanged) to remove one cost:

  inline         run an unbatched model's predict on the event loop, not on its thread
                 (valid only for microsecond models such as Echo: it blocks the loop)
  nometrics      per-request Prometheus updates become no-ops
  nointerceptor  the gRPC server gets no ErrorMappingInterceptor
  directtc       text-classification without the transformers pipeline: one batched
                 tokenizer call and one forward (the pipeline's own pre/post-processing
                 and per-call DataLoader are skipped)

`bench.profile_worker whatif` starts one of these per variant and compares them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

VARIANTS = ("inline", "nometrics", "nointerceptor", "directtc")


def patch_inline() -> None:
    from modelyard.model import Outputs, Request
    from workers.runner import ModelRunner

    original = ModelRunner.predict

    async def predict(self: ModelRunner, request: Request) -> Outputs:
        model = self._model
        if self._batcher is None and model is not None:
            return self._predict_one(model, request, self._clock.now())
        return await original(self, request)

    ModelRunner.predict = predict  # type: ignore[method-assign]


class _NoMetric:
    def inc(self, *args: Any) -> None: ...
    def dec(self, *args: Any) -> None: ...
    def observe(self, *args: Any) -> None: ...


def patch_nometrics() -> None:
    import prometheus_client.metrics

    nothing = _NoMetric()

    def labels(self: Any, *values: Any, **named: Any) -> Any:
        return nothing

    prometheus_client.metrics.MetricWrapperBase.labels = labels  # type: ignore[method-assign]


def patch_nointerceptor() -> None:
    import grpc.aio

    real_server = grpc.aio.server

    def server(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("interceptors", None)
        return real_server(*args, **kwargs)

    # workers.server looks up grpc.aio.server when it builds the server, so this reaches it
    grpc.aio.server = server


def patch_directtc() -> None:
    import torch

    from modelyard.model import Outputs
    from workers.hf.tasks import classification
    from workers.hf.tasks.base import Item, max_input_tokens

    def run_group(self: classification.TextClassification, items: Sequence[Item]) -> list[Outputs]:
        texts = [item.inputs["text"] for item in items]
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=max_input_tokens(self.pipe),
            return_tensors="pt",
        )
        with torch.inference_mode():
            probabilities = self.model(**encoded).logits.softmax(-1)
        scores, order = probabilities.sort(-1, descending=True)
        names = self.model.config.id2label
        results = []
        for item, row, ids in zip(items, scores.tolist(), order.tolist(), strict=True):
            top_k = item.params["top_k"]
            results.append(classification._ranked([names[i] for i in ids][:top_k], row[:top_k]))
        return results

    classification.TextClassification.run_group = run_group  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "inline": patch_inline,
    "nometrics": patch_nometrics,
    "nointerceptor": patch_nointerceptor,
    "directtc": patch_directtc,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variants", default="", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    for name in filter(None, args.variants.split(",")):
        PATCHES[name]()

    from workers.config import load_settings
    from workers.server import run

    settings = load_settings(args.config, port=0, port_file=args.port_file)
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
