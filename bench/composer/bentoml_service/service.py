"""The seed inference graph served by BentoML 1.4, the baseline of `bench.composer`.

The same graph as examples/graphs/inference-graph.yaml, written the way BentoML's docs write
model composition: one service per model (each its own process under `bentoml serve`),
composed with `bentoml.depends`; the two generations run concurrently (asyncio.gather),
then the classifier scores each text (again concurrently, like modelyard's map node).
Models are the same tiny checkpoints (`tools.demo_models`), run through
transformers pipelines on CPU with one torch thread each, as modelyard's workers run them.

    cd bench/composer/bentoml_service
    COMPOSER_BENCH_MODELS=../../../.cache/demo-models OMP_NUM_THREADS=1 \\
        ../../../.cache/bentoml-venv/bin/bentoml serve service:InferenceGraph --port 3000

Only the bench's BentoML venv imports this file (the project venv has no bentoml: mypy
sees the bentoml import as untyped, see the `type: ignore` below). Environment:
COMPOSER_BENCH_MODELS (the checkpoints' folder) and, optionally,
COMPOSER_BENCH_MAX_REQUESTS (BentoML's `runner_connection.max_requests` for calls between
services; unset keeps BentoML's default of 100).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import bentoml  # type: ignore[import-not-found]
import torch
from transformers import pipeline

MODELS = Path(os.environ.get("COMPOSER_BENCH_MODELS", "../../../.cache/demo-models")).resolve()
MAX_NEW_TOKENS = 16

torch.set_num_threads(1)  # modelyard's workers run each model on one thread too (`threads: 1`)

# Per-service settings. BentoML's own defaults are kept unless the bench asks otherwise.
_CONNECTION: dict[str, Any] = {}
if os.environ.get("COMPOSER_BENCH_MAX_REQUESTS"):
    _CONNECTION = {
        "runner_connection": {"max_requests": int(os.environ["COMPOSER_BENCH_MAX_REQUESTS"])}
    }
SETTINGS: dict[str, Any] = {"workers": 1, "traffic": {"timeout": 60}, **_CONNECTION}


class _Generator:
    """A greedy text-generation pipeline (the text after the prompt)."""

    checkpoint = ""

    def __init__(self) -> None:
        self.pipe = pipeline("text-generation", model=str(MODELS / self.checkpoint), device="cpu")

    def _generate(self, text: str, max_new_tokens: int) -> str:
        out = self.pipe(
            text,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            return_full_text=False,
            pad_token_id=self.pipe.tokenizer.eos_token_id,  # type: ignore[union-attr]
        )
        return str(out[0]["generated_text"])


@bentoml.service(**SETTINGS)
class Gpt2(_Generator):
    checkpoint = "tiny-gpt2"

    @bentoml.api
    def generate(self, text: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
        return self._generate(text, max_new_tokens)


@bentoml.service(**SETTINGS)
class DistilGpt2(_Generator):
    checkpoint = "tiny-distilgpt2"

    @bentoml.api
    def generate(self, text: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
        return self._generate(text, max_new_tokens)


@bentoml.service(**SETTINGS)
class Bert:
    """Sentiment: every label with its score, likeliest first (as modelyard returns it)."""

    def __init__(self) -> None:
        self.pipe = pipeline(
            "text-classification", model=str(MODELS / "tiny-bert-sentiment"), device="cpu"
        )

    @bentoml.api
    def classify(self, text: str) -> dict[str, Any]:
        ranked = self.pipe(text, top_k=None, truncation=True)
        return {
            "label": ranked[0]["label"],
            "score": ranked[0]["score"],
            "labels": [r["label"] for r in ranked],
            "scores": [r["score"] for r in ranked],
        }


@bentoml.service(**SETTINGS)
class InferenceGraph:
    """gpt2 and distilgpt2 complete one prompt concurrently; bert scores each text."""

    gpt2 = bentoml.depends(Gpt2)
    distilgpt2 = bentoml.depends(DistilGpt2)
    bert = bentoml.depends(Bert)

    @bentoml.api
    async def run(self, prompt: str) -> dict[str, Any]:
        gpt2_text, distilgpt2_text = await asyncio.gather(
            self.gpt2.to_async.generate(text=prompt, max_new_tokens=MAX_NEW_TOKENS),
            self.distilgpt2.to_async.generate(text=prompt, max_new_tokens=MAX_NEW_TOKENS),
        )
        gpt2_score, distilgpt2_score = await asyncio.gather(
            self.bert.to_async.classify(text=gpt2_text),
            self.bert.to_async.classify(text=distilgpt2_text),
        )
        return {
            "gpt2_text": gpt2_text,
            "gpt2_score": gpt2_score,
            "distilgpt2_text": distilgpt2_text,
            "distilgpt2_score": distilgpt2_score,
        }
