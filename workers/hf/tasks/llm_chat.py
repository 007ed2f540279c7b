"""llm/v1/chat: a conversation in, the assistant's next message out, as OpenAI's chat
completions (and MLflow's llm/v1/chat) shape them.

The messages are rendered with the tokenizer's own chat template, tokenized as the
template says (special tokens included), so usage.prompt_tokens is exactly what the model
read. A model without a chat template cannot serve chat: each request says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.signature import Field
from workers.hf.tasks.llm_choices import ChoiceText
from workers.hf.tasks.llm_generation import GenerationTask

_MESSAGE_FIELDS = ("role", "content", "name")


class LlmChat(GenerationTask):
    task = "llm/v1/chat"
    inputs = (
        Field(
            "messages",
            "list",
            "The conversation so far: maps with role, content and optionally name.",
            element_kind="map",
        ),
    )
    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def prompt_ids(self, inputs: Mapping[str, Any]) -> list[int]:
        messages = chat_messages(inputs["messages"])
        if not self.tokenizer.chat_template:
            raise InvalidArgument(
                f"model '{self.model_name}' has no chat template (its tokenizer defines none), "
                "so messages cannot be rendered: serve it as llm/v1/completions, or give its "
                "tokenizer a chat_template"
            )
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        # Not jinja2's TemplateError by name (jinja2 is transformers' dependency, not
        # ours): whatever rendering these messages raised, the template refused them,
        # e.g. with its raise_exception("roles must alternate...").
        except Exception as error:
            raise InvalidArgument(
                f"the model's chat template refused the messages: {error}"
            ) from None
        return list(encoded["input_ids"])

    def choice(self, index: int, choice: ChoiceText) -> dict[str, Any]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": choice.text},
            "finish_reason": choice.finish_reason,
        }

    def opening(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
        }

    def delta(self, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "index": index,
            "delta": {"content": text} if finish_reason is None else {},
            "finish_reason": finish_reason,
        }


def chat_messages(messages: list[Any]) -> list[dict[str, str]]:
    """The messages as the template reads them; InvalidArgument naming a malformed one."""
    if not messages:
        raise InvalidArgument("input 'messages' must hold at least one message")
    checked = []
    for i, message in enumerate(messages):
        where = f"input 'messages[{i}]'"
        unknown = sorted(set(message) - set(_MESSAGE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"{where} has an unknown field '{unknown[0]}'; a message has role, content "
                "and (optionally) name"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise InvalidArgument(f"{where} needs a role: a non-empty string such as 'user'")
        if not isinstance(content, str):
            raise InvalidArgument(f"{where} needs a content: a string")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidArgument(f"{where} has a name that is not a string")
        checked.append({k: v for k, v in message.items() if v is not None})
    return checked
