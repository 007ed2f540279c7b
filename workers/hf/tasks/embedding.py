"""feature-extraction and sentence-embedding: hidden states, optionally pooled.

The forward pass is done here with the pipeline's model and tokenizer rather than by the
pipeline: the pipeline pads a batch and hands back every position, pads included, so
pooling over its output would average padding into the vector. Here the attention mask
decides which positions are real, and a batch gives the same vectors as one-by-one calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from modelyard.model import Outputs
from modelyard.signature import Field
from workers.hf.tasks.base import Item, TaskAdapter, leading_text, max_input_tokens

_POOLING = ("none", "mean", "cls")


class FeatureExtraction(TaskAdapter):
    task = "feature-extraction"
    pipeline_task = "feature-extraction"
    outputs = (
        Field(
            "embedding",
            "tensor",
            "float32; [hidden] when pooled, [tokens, hidden] when pooling is none.",
        ),
    )
    parameters = (
        Field(
            "pooling",
            "string",
            "none: one vector per token; mean or cls: one vector.",
            required=False,
            choices=_POOLING,
        ),
        Field("normalize", "bool", "Scale each vector to length 1.", required=False),
    )
    default_parameters = {"pooling": "none", "normalize": False}

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self._max_length = _max_length(pipe)

    def group_key(self, item: Item) -> Hashable:
        return ()  # pooling happens after the forward: every request shares it

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        encoded = self.tokenizer(
            [leading_text(self.tokenizer, item.inputs["text"], self._max_length) for item in items],
            padding=True,
            truncation=self._max_length is not None,
            max_length=self._max_length,
            return_tensors="pt",
        ).to(self.model.device)
        with torch.inference_mode():
            hidden = self.model(**encoded)[0].float()  # last hidden state: [batch, tokens, dim]
        mask = encoded["attention_mask"].bool()
        return [
            {"embedding": _vector(hidden[i][mask[i]], item.params)} for i, item in enumerate(items)
        ]


class SentenceEmbedding(FeatureExtraction):
    """One normalised vector per text, as sentence-transformers models are meant to be used."""

    task = "sentence-embedding"
    default_parameters = {"pooling": "mean", "normalize": True}


def _vector(tokens: torch.Tensor, params: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Pools the real (unpadded) token states of one text."""
    pooling = params["pooling"]
    if pooling == "mean":
        tokens = tokens.mean(dim=0)
    elif pooling == "cls":
        tokens = tokens[0]
    if params["normalize"]:
        tokens = torch.nn.functional.normalize(tokens, dim=-1)
    return tokens.cpu().numpy().astype(np.float32, copy=False)


def _max_length(pipe: Any) -> int | None:
    """The model's limit, lowered to a sentence-transformers checkpoint's own setting."""
    limit = max_input_tokens(pipe)
    path = os.path.join(str(pipe.model.name_or_path), "sentence_bert_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as file:
            configured = json.load(file).get("max_seq_length")
        if isinstance(configured, int) and configured > 0:
            limit = configured if limit is None else min(limit, configured)
    return limit
