"""The decoded text of a growing list of token ids, at a cost per token that does not grow
with the text.

Decoding all the ids at every step costs O(n) a step, O(n²) a generation: about 1 ms a
step at 512 tokens with the tiny GPT-2's tokenizer, more than the tiny model's step. This
decodes only a window: the ids since the last settled point plus a few before it, whose
text is decoded again and cut off. Those few tokens of context (more if they show no text)
are what make the window's text continue the settled text exactly: a SentencePiece
tokenizer drops the leading space of the first token it decodes, and a byte-level one
needs a character's bytes together; both then happen inside the context, which is cut
off, not at the seam.

Where a tokenizer does join text across the seam (clean-up of spaces before punctuation),
the window's text no longer starts with its context's text: that step decodes everything,
as before, and the window starts afresh. So the text is always what decoding all the ids
gives, which is what lets a stream send text that the final result repeats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Tokens decoded again in front of the new ones (vLLM's detokenizer keeps 5 as well).
CONTEXT_TOKENS = 5
#: The window settles once it holds this many new tokens and ends on a whole character:
#: a step decodes CONTEXT_TOKENS + SETTLE_TOKENS ids or so.
SETTLE_TOKENS = 16
_UNFINISHED_CHARACTER = "\ufffd"  # how a UTF-8 sequence decodes until its last byte


class IncrementalDecoder:
    """`extend(ids)` adds generated ids and returns the text of all of them so far."""

    def __init__(self, tokenizer: Any, **decode_options: Any) -> None:
        self._tokenizer = tokenizer
        self._options = decode_options
        self._ids: list[int] = []
        self._settled = 0  # ids whose text is `_settled_text`
        self._settled_text = ""
        self._context = 0  # where the window's decoding starts (a few ids before `_settled`)
        self._context_text = ""  # the text of ids[_context:_settled], cut off the window's
        self.text = ""

    def extend(self, ids: Iterable[int]) -> str:
        self._ids.extend(ids)
        window = self._decode(self._context)
        if window.startswith(self._context_text):
            self.text = self._settled_text + window[len(self._context_text) :]
        else:  # the tokenizer joined text across the seam: what decoding all gives
            self.text = self._decode(0)
            self._settle_at(0, "")
        unsettled = len(self._ids) - self._settled
        if unsettled >= SETTLE_TOKENS and not self.text.endswith(_UNFINISHED_CHARACTER):
            self._settle_at(len(self._ids), self.text)
        return self.text

    def _settle_at(self, settled: int, text: str) -> None:
        self._settled, self._settled_text = settled, text
        # The context must show some text: a tokenizer drops the leading space of the first
        # token that has any, and skipped special tokens or a bare space show none.
        context, context_text = settled, ""
        while context > 0 and not context_text:
            context = max(0, context - CONTEXT_TOKENS)
            context_text = self._decode(context, settled)
        self._context, self._context_text = context, context_text

    def _decode(self, start: int, end: int | None = None) -> str:
        text: str = self._tokenizer.decode(self._ids[start:end], **self._options)
        return text
