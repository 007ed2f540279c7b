"""Custom models, as a user writes them: a torch module, a streamer, a preprocessing step
and a plain function.

Serve them with examples/custom-worker.yaml:

    PYTHONPATH=examples modelyard worker --config examples/custom-worker.yaml --port 50052

Both get the worker's dynamic batching, streaming endpoint, health and metrics for free.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from modelyard.model import LoadContext, Model, Outputs, Request
from modelyard.signature import Field


class LinearScorer(Model):
    """A torch module behind Predict: one batched forward pass for the whole batch.

    `source` may name a state-dict file saved with torch.save; without one the weights
    are seeded, so the example runs anywhere.
    """

    task = "linear-scorer"
    # with a dtype, JSON clients (grpcurl, the command line) may send [0.5, 1, 2, 3] too
    inputs = (Field("features", "tensor", "A vector of length 4.", dtype="float32"),)
    outputs = (Field("score", "float", "the module's output"),)

    def load(self, context: LoadContext) -> None:
        torch.manual_seed(0)
        self.module = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
        )
        if context.source:
            self.module.load_state_dict(torch.load(context.source, map_location=context.device))
        self.module.to(context.device).eval()
        self.device = context.device

    def predict(self, batch: list[Request]) -> list[Outputs]:
        features = np.stack([np.asarray(r.inputs["features"], np.float32) for r in batch])
        with torch.inference_mode():
            scores = self.module(torch.from_numpy(features).to(self.device)).squeeze(-1)
        return [{"score": float(s)} for s in scores.cpu()]


class WordStreamer(Model):
    """Streams the words of its input back one by one: predict_stream in its simplest form."""

    task = "word-streamer"
    streaming = True
    inputs = (Field("text", "string"),)
    outputs = (Field("text", "string"),)

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [{"text": r.inputs["text"]} for r in batch]

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        words = request.inputs["text"].split()
        for i, word in enumerate(words):
            if stop.is_set():
                break
            yield {"text": word if i == 0 else " " + word}
        return {"text": " ".join(words)}


def shout(text: str, suffix: str = "!") -> dict[str, Any]:
    """A plain function served as a model: inputs and parameters arrive as keyword args."""
    return {"text": text.upper() + suffix}


class Normalize(Model):
    """Text preprocessing: trims, collapses whitespace, and lower-cases (seed: sequential)."""

    task = "normalize"
    inputs = (Field("text", "string", "Raw text."),)
    outputs = (Field("text", "string", "The normalised text."),)
    parameters = (Field("lowercase", "bool", "Lower-case the text."),)
    default_parameters = {"lowercase": True}

    def predict(self, batch: list[Request]) -> list[Outputs]:
        results: list[Outputs] = []
        for request in batch:
            text = " ".join(request.inputs["text"].split())
            results.append({"text": text.lower() if request.parameters["lowercase"] else text})
        return results
