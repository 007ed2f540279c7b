"""llm/v1/completions: a prompt in, its continuation out, as OpenAI's (legacy) completions
and MLflow's llm/v1/completions shape them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.signature import Field
from workers.hf.tasks.llm_choices import ChoiceText
from workers.hf.tasks.llm_generation import GenerationTask


class LlmCompletions(GenerationTask):
    task = "llm/v1/completions"
    inputs = (Field("prompt", "string", "The text to continue."),)
    id_prefix = "cmpl"
    object_name = "text_completion"
    chunk_object = "text_completion"  # OpenAI's completion chunks carry the same object

    def prompt_ids(self, inputs: Mapping[str, Any]) -> list[int]:
        ids: list[int] = self.tokenizer(inputs["prompt"], add_special_tokens=True)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]  # an empty prompt: generate from the start
        if not ids:
            raise InvalidArgument("input 'prompt' must not be empty for this model")
        return ids

    def choice(self, index: int, choice: ChoiceText) -> dict[str, Any]:
        return {"index": index, "text": choice.text, "finish_reason": choice.finish_reason}

    def delta(self, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": finish_reason}
