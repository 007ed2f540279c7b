"""A generate() streamer whose pieces always add up to the decoded text.

transformers' TextIteratorStreamer emits empty strings while it waits for a word boundary,
and after each newline it starts decoding afresh, which drops the space a SentencePiece
tokenizer (Llama, Mistral) puts before the next word: the streamed text then differs from
the final one. This one keeps the text of all generated tokens (decoded incrementally:
`incremental_decoding`, a window a step rather than everything) and emits only the new text
up to the last whitespace, so a word is sent once it is complete and never revised.

It hands each piece to a callback on `generate`'s own thread: no queue, no reader thread
(`base.PushStreamingTask`).

Pieces are sent at most every `interval` seconds (the first word at once): every piece costs the
worker a message and a wake-up of its event loop (0.2-0.5 ms of CPU, a fifth of a tiny
model's decoding step), so a model faster than one token an interval sends a few tokens a
piece. A slower model is not held back: its every word goes out as soon as it is complete.
Between pieces the tokens are only kept, not decoded.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from typing import Any

from transformers.generation.streamers import BaseStreamer

from workers.hf.tasks.incremental_decoding import IncrementalDecoder


class IncrementalTextStreamer(BaseStreamer):
    """Receives token ids from `generate` and calls `emit` with each new, non-empty piece
    of text, on the same thread, at most every `interval` seconds (0: as soon as a word is
    complete). The first `put` (the prompt) is skipped."""

    def __init__(
        self,
        tokenizer: Any,
        emit: Callable[[str], None],
        *,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        self._emit_piece = emit
        self._sent = 0  # characters of the decoded text already emitted
        self._prompt_seen = False
        self._interval = interval
        self._clock = clock
        self._next_due = float("-inf")  # the first word goes out at once
        self._unseen: list[int] = []  # token ids not decoded yet

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        # decoded only when a piece may go out: between pieces a token costs no decoding
        self._unseen.extend(value.reshape(-1).tolist())
        if self._clock() >= self._next_due:
            text = self._decoded()
            self._emit(text, _stable_end(text, self._sent))

    def end(self) -> None:
        text = self._decoded()
        self._emit(text, len(text))

    def _decoded(self) -> str:
        if self._unseen:
            self._decoder.extend(self._unseen)
            self._unseen.clear()
        return self._decoder.text

    def _emit(self, text: str, end: int) -> None:
        if end > self._sent:
            piece, self._sent = text[self._sent : end], end
            if not piece.isspace():  # a lone space before the first word starts no wait
                self._next_due = self._clock() + self._interval
            self._emit_piece(piece)


def _stable_end(text: str, sent: int) -> int:
    """How much of `text` more tokens cannot change: up to the last whitespace, or all of
    it after a wide (CJK) character, which stands alone as a word; never an unfinished
    UTF-8 sequence (decoded as U+FFFD until its last byte arrives). Only the text after
    `sent` (already emitted, so stable) is searched: 0 when it holds no whitespace."""
    if (
        text
        and not text.endswith("\ufffd")
        and unicodedata.east_asian_width(text[-1]) in ("W", "F")
    ):
        return len(text)
    return max(text.rfind(" ", sent), text.rfind("\n", sent), text.rfind("\t", sent)) + 1
