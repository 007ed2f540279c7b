"""OpenAI's bodies from modelyard's values, and back.

A served llm/v1 model already answers in OpenAI's shape (the worker's tasks build `id`,
`object`, `created`, `choices`, `usage` and chat.completion.chunk-shaped chunks), so for
it translating is renaming: `model` becomes the name the client asked for (the worker
names its checkpoint there). A graph answers a text, which `Shape` dresses as a choice or
a chunk the way the worker's tasks do. Server-sent events are framed here too.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.models import CHAT, COMPLETIONS
from modelyard.values import jsonable

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Shape:
    """How one endpoint's answers look: chat completions or (legacy) completions."""

    task: str  # the llm/v1 task that answers it
    id_prefix: str
    object: str
    chunk_object: str

    def choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        if self.task == CHAT:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "finish_reason": finish_reason}
        return {"index": 0, "text": text, "finish_reason": finish_reason}

    def delta(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        if self.task == CHAT:
            delta = {"content": text} if finish_reason is None else {}
            return {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"index": 0, "text": text, "finish_reason": finish_reason}

    def opening(self) -> dict[str, Any] | None:
        """The choice of a stream's first chunk, before any text (chat has one)."""
        if self.task == CHAT:
            delta = {"role": "assistant", "content": ""}
            return {"index": 0, "delta": delta, "finish_reason": None}
        return None


CHAT_SHAPE = Shape(CHAT, "chatcmpl", "chat.completion", "chat.completion.chunk")
COMPLETION_SHAPE = Shape(COMPLETIONS, "cmpl", "text_completion", "text_completion")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every message of one answer shares: id, created, the model's name."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, shape: Shape, model: str) -> Envelope:
        return cls(f"{shape.id_prefix}-{uuid.uuid4().hex}", int(time.time()), model)

    def answer(self, shape: Shape, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return self._fields(shape.object, choices)

    def chunk(self, shape: Shape, choice: dict[str, Any]) -> dict[str, Any]:
        return self._fields(shape.chunk_object, [choice])

    def _fields(self, object_name: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def renamed(outputs: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A worker's response or chunk as OpenAI's, under the name the client asked for."""
    answer = dict(outputs)
    answer["model"] = model
    return answer


def usage_chunk(final: Mapping[str, Any], model: str, shape: Shape) -> dict[str, Any]:
    """OpenAI's last chunk when stream_options.include_usage is set: no choices, the
    whole stream's usage (the worker's final result has it)."""
    return {
        "id": final.get("id", ""),
        "object": shape.chunk_object,
        "created": final.get("created", int(time.time())),
        "model": model,
        "choices": [],
        "usage": final.get("usage"),
    }


def embeddings(outputs: Mapping[str, Any], model: str, encoding_format: str) -> dict[str, Any]:
    """llm/v1/embeddings outputs as OpenAI's answer; base64 is the float32 little-endian
    bytes of each vector (what the official client asks for unless told otherwise)."""
    encode = _base64 if encoding_format == "base64" else list
    data = [
        {"object": "embedding", "index": item["index"], "embedding": encode(item["embedding"])}
        for item in outputs["data"]
    ]
    return {"object": "list", "data": data, "model": model, "usage": outputs["usage"]}


def _base64(vector: Sequence[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def model_entry(name: str, created: int, task: str) -> dict[str, Any]:
    """One model of /v1/models; `task` (not an OpenAI field) says what it answers."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "modelyard",
        "task": task,
    }


def event(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying `data` as JSON."""
    return b"data: " + dumps(data) + b"\n\n"


def dumps(data: Mapping[str, Any]) -> bytes:
    """Compact JSON; tensors and bytes as `modelyard.values.jsonable` writes them."""
    return json.dumps(data, separators=(",", ":"), default=jsonable).encode()
