"""Stand-ins for the seed graph's checkpoints in smoke runs: plain models with the same
names, signatures and output shapes (a generator that streams words, a classifier that
ranks two labels), so a smoke run exercises every scenario without torch or checkpoints.
Served by class path (`bench.composer.standins:Generator`) from the repository root."""

from __future__ import annotations

import threading
from collections.abc import Generator as Gen

from modelyard.model import Model, Outputs, Request
from modelyard.signature import Field


class Generator(Model):
    """'Generates' `max_new_tokens` words; streams them one by one with their leading
    space, as the text-generation adapter streams tokens."""

    task = "text-generation"
    streaming = True
    inputs = (Field("text", "string", "The prompt."),)
    outputs = (Field("text", "string", "The continuation."),)
    parameters = (
        Field("max_new_tokens", "int", "How many words."),
        Field("do_sample", "bool", "Ignored: the words are always the same."),
    )
    default_parameters = {"max_new_tokens": 16, "do_sample": False}

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [{"text": "".join(_words(request))} for request in batch]

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Gen[Outputs, None, Outputs]:
        produced = ""
        for word in _words(request):
            if stop.is_set():
                break
            produced += word
            yield {"text": word}
        return {"text": produced}


def _words(request: Request) -> list[str]:
    count = int(request.parameters["max_new_tokens"])
    return [f" word{i}" for i in range(count)]


class Classifier(Model):
    """Ranks POSITIVE and NEGATIVE by the text's length, as text-classification ranks."""

    task = "text-classification"
    inputs = (Field("text", "string", "What to classify."),)
    outputs = (
        Field("label", "string", "The likeliest label."),
        Field("score", "float", "Its score."),
        Field("labels", "list", "Labels, likeliest first.", element_kind="string"),
        Field("scores", "list", "Their scores, in the same order.", element_kind="float"),
    )

    def predict(self, batch: list[Request]) -> list[Outputs]:
        results: list[Outputs] = []
        for request in batch:
            labels = ["POSITIVE", "NEGATIVE"]
            if len(request.inputs["text"]) % 2:
                labels.reverse()
            results.append({"label": labels[0], "score": 0.75, "labels": labels,
                            "scores": [0.75, 0.25]})  # fmt: skip
        return results
