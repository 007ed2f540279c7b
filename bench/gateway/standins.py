"""The smoke run's chat model: llm/v1/chat-shaped answers and chunks, no weights, no torch.

It answers `max_tokens` words (one chunk each) whatever the conversation says, with the
usage a real llm/v1/chat task reports, so both load kinds read it as they read the real one.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

from modelyard.model import Model, Outputs, Request
from modelyard.signature import Field

_ENVELOPE = {"id": "chatcmpl-standin", "created": 0, "model": "standin"}


class StandInChat(Model):
    task = "llm/v1/chat"
    streaming = True
    inputs = (Field("messages", "list", "The conversation.", element_kind="map"),)
    parameters = (
        Field("max_tokens", "int", "Words to answer.", required=False),
        Field("min_new_tokens", "int", "Ignored: it always answers max_tokens.", required=False),
    )
    default_parameters = {"max_tokens": 8, "min_new_tokens": None}

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [self._answer(request, self._words(request)) for request in batch]

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        words = self._words(request)
        yield self._chunk({"role": "assistant", "content": ""}, None)
        for word in words:
            if stop.is_set():
                break
            yield self._chunk({"content": word}, None)
        yield self._chunk({}, "length")
        return self._answer(request, words)

    def _words(self, request: Request) -> list[str]:
        return [f" word{i}" for i in range(int(request.parameters["max_tokens"]))]

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> Outputs:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**_ENVELOPE, "object": "chat.completion.chunk", "choices": [choice]}

    def _answer(self, request: Request, words: list[str]) -> Outputs:
        message = {"role": "assistant", "content": "".join(words)}
        usage = {"prompt_tokens": 1, "completion_tokens": len(words),
                 "total_tokens": 1 + len(words)}  # fmt: skip
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        return {**_ENVELOPE, "object": "chat.completion", "choices": [choice], "usage": usage}
