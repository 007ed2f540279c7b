"""The OpenAI-shaped envelope the llm/v1 tasks answer with: id, object, created, model,
usage, as MLflow's llm/v1 response schemas define them.

`model` names the checkpoint (its Hugging Face id, or its folder's name), as OpenAI's
names the snapshot that answered; the served name is on the PredictResponse itself.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.signature import Field
from workers.hf.tasks.llm_choices import ChoiceText

COMPLETION_OUTPUTS: tuple[Field, ...] = (
    Field("id", "string", "Unique id of this completion (its stream's chunks share it)."),
    Field("object", "string", "chat.completion or text_completion."),
    Field("created", "int", "When it was made, in Unix seconds."),
    Field("model", "string", "The checkpoint that answered."),
    Field("choices", "list", "One map per choice, by index.", element_kind="map"),
    Field(
        "usage",
        "map",
        "prompt_tokens (once, whatever n is), completion_tokens (all choices), total_tokens.",
    ),
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every message of one completion shares (a stream's chunks and its result)."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Envelope:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)

    def fields(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}


def usage(prompt_tokens: int, choices: Sequence[ChoiceText]) -> dict[str, int]:
    completion = sum(len(choice.ids) for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def checkpoint_name(pipe: Any) -> str:
    """A Hugging Face id as it is; a local checkpoint by its folder's name."""
    source = str(pipe.model.name_or_path)
    return os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
