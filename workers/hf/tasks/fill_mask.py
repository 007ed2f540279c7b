"""fill-mask: the likeliest tokens for the one mask token in a text."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.model import Outputs
from modelyard.signature import Field
from workers.hf.tasks.base import Item, TaskAdapter, max_input_tokens, require_positive


class FillMask(TaskAdapter):
    task = "fill-mask"
    pipeline_task = "fill-mask"
    outputs = (
        Field(
            "sequences", "list", "The text with each candidate filled in.", element_kind="string"
        ),
        Field("tokens", "list", "The candidate tokens, likeliest first.", element_kind="string"),
        Field("scores", "list", "Their probabilities.", element_kind="float"),
    )
    parameters = (Field("top_k", "int", "How many candidates to return.", required=False),)
    default_parameters = {"top_k": 5}

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        self._mask = str(self.tokenizer.mask_token)
        self._limit = max_input_tokens(pipe)

    def check(self, item: Item) -> None:
        require_positive(item.params, "top_k")
        ids = self.tokenizer(item.inputs["text"])["input_ids"]
        masks = ids.count(self.tokenizer.mask_token_id)
        if masks == 0:
            raise InvalidArgument(f"input 'text' must contain the mask token {self._mask}")
        if masks > 1:
            # the pipeline would answer with one ranking per mask, each ignoring the others
            raise InvalidArgument(
                f"input 'text' must contain the mask token {self._mask} exactly once, found {masks}"
            )
        if self._limit is not None and len(ids) > self._limit:
            raise InvalidArgument(
                f"input 'text' is {len(ids)} tokens; this model takes at most {self._limit}"
            )

    def group_key(self, item: Item) -> Hashable:
        return ()  # top_k only trims the ranking: every request shares one forward

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        texts = [item.inputs["text"] for item in items]
        top_k = min(max(item.params["top_k"] for item in items), len(self.tokenizer))
        found: list[list[dict[str, Any]]] = self.pipe(texts, top_k=top_k, batch_size=len(texts))
        if len(texts) == 1:
            found = [found]  # type: ignore[list-item]  # one text: the pipeline drops a level
        results = []
        for item, candidates in zip(items, found, strict=True):
            kept = candidates[: item.params["top_k"]]
            results.append(
                {
                    "sequences": [str(c["sequence"]) for c in kept],
                    "tokens": [str(c["token_str"]) for c in kept],
                    "scores": [float(c["score"]) for c in kept],
                }
            )
        return results
