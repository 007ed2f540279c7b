"""token-classification (named entities): labelled spans of a text."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from modelyard.model import Outputs
from modelyard.signature import Field
from workers.hf.tasks.base import Item, TaskAdapter

_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassification(TaskAdapter):
    task = "token-classification"
    pipeline_task = "token-classification"
    outputs = (
        Field(
            "entities",
            "list",
            "Maps with entity (the label, or the group when aggregated), score, word, start "
            "and end (character offsets into the text).",
            element_kind="map",
        ),
    )
    parameters = (
        Field(
            "aggregation_strategy",
            "string",
            "How sub-word predictions merge into entities.",
            required=False,
            choices=_STRATEGIES,
        ),
    )
    default_parameters = {"aggregation_strategy": "simple"}

    def group_key(self, item: Item) -> Hashable:
        return str(item.params["aggregation_strategy"])

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        texts = [item.inputs["text"] for item in items]
        found: list[list[dict[str, Any]]] = self.pipe(
            texts,
            aggregation_strategy=items[0].params["aggregation_strategy"],
            batch_size=len(texts),
        )
        return [{"entities": [_entity(e) for e in entities]} for entities in found]


def _entity(found: dict[str, Any]) -> dict[str, Any]:
    # aggregated results name the label "entity_group"; one key for both keeps clients simple
    label = found.get("entity_group", found.get("entity"))
    return {
        "entity": str(label),
        "score": float(found["score"]),
        "word": str(found["word"]),
        "start": None if found.get("start") is None else int(found["start"]),
        "end": None if found.get("end") is None else int(found["end"]),
    }
