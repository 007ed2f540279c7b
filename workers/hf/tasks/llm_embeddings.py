"""llm/v1/embeddings: one vector per input text, as OpenAI's embeddings (and MLflow's
llm/v1/embeddings) shape them.

Vectors are the mean of the text's token states, scaled to length 1: how
sentence-transformers models (all-MiniLM-L6-v2 and its kin) are meant to be used, and the
same vectors the sentence-embedding task gives. Texts longer than the model's limit are
truncated to it, and usage counts the tokens the model read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.model import Outputs
from modelyard.signature import Field
from workers.hf.tasks.base import Item
from workers.hf.tasks.embedding import FeatureExtraction
from workers.hf.tasks.llm_responses import checkpoint_name

MAX_INPUTS = 2048  # OpenAI's limit per request
# Texts per forward pass: a group of requests may bring thousands, and one pass over all
# of them would hold every text's hidden states at once.
_FORWARD_BATCH = 64
_POOLED = {"pooling": "mean", "normalize": True}


class LlmEmbeddings(FeatureExtraction):
    """Feature extraction's forward pass and pooling under OpenAI's signature, which
    replaces its own (hence the ignores: mypy reads the base's tuples as fixed-length)."""

    task = "llm/v1/embeddings"
    inputs = (Field("input", "any", f"A string, or a list of up to {MAX_INPUTS} strings."),)
    outputs = (  # type: ignore[assignment]
        Field("object", "string", "list"),
        Field(
            "data",
            "list",
            "One map per input, in order: object (embedding), index, embedding (floats).",
            element_kind="map",
        ),
        Field("model", "string", "The checkpoint that answered."),
        Field("usage", "map", "prompt_tokens and total_tokens: the tokens the model read."),
    )
    parameters = ()  # type: ignore[assignment]
    default_parameters = {}

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self.model_name = checkpoint_name(pipe)

    def check(self, item: Item) -> None:
        texts = input_texts(item.inputs["input"])
        encoded = self.tokenizer(
            texts, truncation=self._max_length is not None, max_length=self._max_length
        )
        item.prepared["texts"] = texts
        item.prepared["tokens"] = sum(len(ids) for ids in encoded["input_ids"])

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        texts = [text for item in items for text in item.prepared["texts"]]
        vectors = []
        for start in range(0, len(texts), _FORWARD_BATCH):
            batch = [Item({"text": t}, _POOLED) for t in texts[start : start + _FORWARD_BATCH]]
            vectors += [outputs["embedding"] for outputs in super().run_group(batch)]
        results: list[Outputs] = []
        start = 0
        for item in items:
            mine = vectors[start : start + len(item.prepared["texts"])]
            start += len(mine)
            tokens = item.prepared["tokens"]
            results.append(
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": vector.tolist()}
                        for i, vector in enumerate(mine)
                    ],
                    "model": self.model_name,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )
        return results


def input_texts(value: Any) -> list[str]:
    """`input` as a list of strings: a string alone, or a list of them."""
    texts = [value] if isinstance(value, str) else value
    if (
        not isinstance(texts, list)
        or not 0 < len(texts) <= MAX_INPUTS
        or not all(isinstance(t, str) for t in texts)
    ):
        raise InvalidArgument(
            f"input 'input' must be a string or a list of 1 to {MAX_INPUTS} strings"
        )
    return texts
