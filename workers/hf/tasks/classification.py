"""text-classification and zero-shot-classification."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from modelyard.errors import InvalidArgument
from modelyard.model import Outputs
from modelyard.signature import Field
from workers.hf.tasks.base import (
    Item,
    TaskAdapter,
    leading_text,
    max_input_tokens,
    require_positive,
)

# Zero-shot runs one forward per (text, label) pair; this caps the pairs in one forward.
_MAX_PAIRS_PER_FORWARD = 64

_RANKED_OUTPUTS = (
    Field("label", "string", "The likeliest label."),
    Field("score", "float", "Its score."),
    Field("labels", "list", "Labels, likeliest first.", element_kind="string"),
    Field("scores", "list", "Their scores, in the same order.", element_kind="float"),
)


def _ranked(labels: list[str], scores: list[float]) -> Outputs:
    return {"label": labels[0], "score": scores[0], "labels": labels, "scores": scores}


class TextClassification(TaskAdapter):
    task = "text-classification"
    pipeline_task = "text-classification"
    outputs = _RANKED_OUTPUTS
    parameters = (
        Field("top_k", "int", "How many labels to return; null returns all.", required=False),
    )
    default_parameters = {"top_k": None}

    def check(self, item: Item) -> None:
        require_positive(item.params, "top_k")

    def group_key(self, item: Item) -> Hashable:
        return ()  # top_k only trims the ranking: every request shares one forward

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        # One tokenizer call and one forward for the whole batch, as the pipeline would do
        # it: calling the pipeline costs 2-4x the model's own time in per-item Python
        # (measured in bench/README.md), which is what batching is meant to save.
        pipe = self.pipe
        limit = max_input_tokens(pipe)
        encoded = pipe.tokenizer(
            [leading_text(pipe.tokenizer, item.inputs["text"], limit) for item in items],
            padding=True,
            truncation=True,  # over-long inputs raise in transformers 5 otherwise
            max_length=limit,
            return_tensors="pt",
        ).to(pipe.device)
        with torch.inference_mode():
            logits = pipe.model(**encoded).logits.float()
        config = pipe.model.config
        # the pipeline's rule: sigmoid for multi-label or single-logit heads, else softmax
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            scores = logits.sigmoid()
        else:
            scores = logits.softmax(dim=-1)
        ordered = scores.sort(dim=-1, descending=True)
        results = []
        for item, values, indexes in zip(
            items, ordered.values.tolist(), ordered.indices.tolist(), strict=True
        ):
            keep = item.params["top_k"]  # None keeps all
            labels = [str(config.id2label[i]) for i in indexes[:keep]]
            results.append(_ranked(labels, values[:keep]))
        return results


class ZeroShotClassification(TaskAdapter):
    task = "zero-shot-classification"
    pipeline_task = "zero-shot-classification"
    inputs = (
        Field("text", "string", "The text to classify."),
        Field(
            "candidate_labels",
            "list",
            "The labels to choose from (at least one).",
            element_kind="string",
        ),
    )
    outputs = _RANKED_OUTPUTS
    parameters = (
        Field("hypothesis_template", "string", "NLI hypothesis; {} stands for a label.", False),
        Field(
            "multi_label",
            "bool",
            "Score each label on its own (scores need not sum to 1).",
            required=False,
        ),
    )
    default_parameters = {"hypothesis_template": "This example is {}.", "multi_label": False}

    def check(self, item: Item) -> None:
        labels = item.inputs["candidate_labels"]
        if not labels:
            raise InvalidArgument("input 'candidate_labels' must hold at least one label")
        if any(not label.strip() for label in labels):
            raise InvalidArgument("input 'candidate_labels' must not hold empty labels")
        template = item.params["hypothesis_template"]
        if "{}" not in template:
            raise InvalidArgument(
                f"parameter 'hypothesis_template' must contain {{}} where the label goes, "
                f"e.g. 'This example is {{}}.'; got {template!r}"
            )
        try:
            template.format("label")
        except (IndexError, KeyError, ValueError) as error:
            raise InvalidArgument(
                f"parameter 'hypothesis_template' must contain one {{}} and no other braces "
                f"(write {{{{ and }}}} for literal braces); got {template!r}"
            ) from error

    def group_key(self, item: Item) -> Hashable:
        labels = tuple(item.inputs["candidate_labels"])
        return (labels, item.params["hypothesis_template"], item.params["multi_label"])

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        first = items[0]
        labels = list(first.inputs["candidate_labels"])
        limit = max_input_tokens(self.pipe)
        texts = [leading_text(self.tokenizer, item.inputs["text"], limit) for item in items]
        results: list[dict[str, Any]] = self.pipe(
            texts,
            candidate_labels=labels,
            hypothesis_template=first.params["hypothesis_template"],
            multi_label=first.params["multi_label"],
            batch_size=min(len(texts) * len(labels), _MAX_PAIRS_PER_FORWARD),
        )
        return [
            _ranked([str(x) for x in r["labels"]], [float(s) for s in r["scores"]]) for r in results
        ]
