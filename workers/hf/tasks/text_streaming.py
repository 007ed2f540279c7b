"""A generate() streamer whose pieces always add up to the decoded text.

transformers' TextIteratorStreamer emits empty strings while it waits for a word boundary,
and after each newline it starts decoding afresh, which drops the space a SentencePiece
tokenizer (Llama, Mistral) puts before the next word: the streamed text then differs from
the final one. This one decodes all generated tokens each step and emits only the new text
up to the last whitespace, so a word is sent once it is complete and never revised.
"""

from __future__ import annotations

import queue
import unicodedata
from collections.abc import Iterator
from typing import Any

from transformers.generation.streamers import BaseStreamer

_DONE = object()


class IncrementalTextStreamer(BaseStreamer):
    """Receives token ids from `generate` on its thread; iterate it on another.

    The first `put` (the prompt) is skipped. Iteration ends after `end()` or `close()`.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded text already emitted
        self._prompt_seen = False
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._decode()
        self._emit(text, _stable_end(text))

    def end(self) -> None:
        text = self._decode()
        self._emit(text, len(text))
        self.close()

    def close(self) -> None:
        """Ends iteration (idempotent: iteration stops at the first end marker)."""
        self._queue.put(_DONE)

    def __iter__(self) -> Iterator[str]:
        while (piece := self._queue.get()) is not _DONE:
            assert isinstance(piece, str)
            yield piece

    def _decode(self) -> str:
        text: str = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        return text

    def _emit(self, text: str, end: int) -> None:
        if end > self._sent:
            self._queue.put(text[self._sent : end])
            self._sent = end


def _stable_end(text: str) -> int:
    """How much of `text` more tokens cannot change: up to the last whitespace, or all of
    it after a wide (CJK) character, which stands alone as a word; never an unfinished
    UTF-8 sequence (decoded as U+FFFD until its last byte arrives)."""
    if (
        text
        and not text.endswith("\ufffd")
        and unicodedata.east_asian_width(text[-1]) in ("W", "F")
    ):
        return len(text)
    return max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1
