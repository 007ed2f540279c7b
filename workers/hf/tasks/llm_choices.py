"""One choice as it is generated: its tokens, its text up to any stop sequence, and why
it ended; and the stopping criterion that feeds every choice of a generation.

Stop sequences are matched on the decoded text with the model's own tokenizer, so a stop
sequence that spans several tokens (or starts in the middle of one) is found as soon as
its last character is generated, and generation of that choice ends there.

Text is what decoding all of a choice's tokens gives at each step, never pieces decoded
apart (`incremental_decoding` gets it from a window of the latest tokens): a prefix of the
tokens then decodes to a prefix of the final text (bar a trailing unfinished UTF-8
character), which is what lets a stream send text before the choice is complete.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria

from workers.hf.tasks.incremental_decoding import IncrementalDecoder

STOP = "stop"
LENGTH = "length"
_UNFINISHED_CHARACTER = "\ufffd"  # how a UTF-8 sequence decodes until its last byte


class ChoiceText:
    """Tokens are added one at a time; `finish_reason` is set once the choice ends:
    "stop" at an end-of-text token or a stop sequence, "length" at `limit` tokens."""

    def __init__(
        self, tokenizer: Any, stops: Sequence[str], eos_ids: Collection[int], limit: int
    ) -> None:
        self._decoder = IncrementalDecoder(
            tokenizer, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self._stops = tuple(stops)
        self._longest_stop = max((len(s) for s in stops), default=0)
        self._eos_ids = eos_ids
        self._limit = limit
        #: The generated tokens, up to the one that ended the choice. Their count is the
        #: choice's completion_tokens.
        self.ids: list[int] = []
        #: The decoded text, cut before the first stop sequence.
        self.text = ""
        self.finish_reason: str | None = None
        self._taken = 0  # characters of `text` already handed out by `take`

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token: int) -> bool:
        """Takes the next generated token (ignored once finished); whether it has ended."""
        if self.finished:
            return True
        self.ids.append(token)
        if token in self._eos_ids:
            self.finish_reason = STOP  # an end-of-text token decodes to nothing
            return True
        self.text = self._decoder.extend((token,))
        cut = _first_stop(self.text, self._stops)
        if cut is not None:
            self.text = self.text[:cut]
            self.finish_reason = STOP
        elif len(self.ids) >= self._limit:
            self.finish_reason = LENGTH
        return self.finished

    def end(self) -> None:
        """Generation is over: a choice that had not stopped ran out of tokens."""
        if not self.finished:
            self.finish_reason = LENGTH

    def take(self) -> str:
        """The text not taken yet that more tokens cannot change: all of it once the choice
        has finished; before, it holds back an unfinished character and any tail that could
        be the start of a stop sequence."""
        end = len(self.text) if self.finished else self._settled_end()
        piece = self.text[self._taken : end]
        self._taken = max(self._taken, end)
        return piece

    def _settled_end(self) -> int:
        text = self.text
        end = len(text)
        while end and text[end - 1] == _UNFINISHED_CHARACTER:
            end -= 1
        for held in range(min(self._longest_stop - 1, end), 0, -1):
            tail = text[end - held : end]
            if any(stop.startswith(tail) for stop in self._stops):
                return end - held
        return end


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop sequence in `text` begins, if any does."""
    found = [at for at in (text.find(stop) for stop in stops) if at >= 0]
    return min(found) if found else None


class ChoiceWatcher(StoppingCriteria):
    """Hands each generated token to its row's choice and ends the rows whose choice has
    finished (transformers then pads them); ends every row once an event is set.

    transformers calls it once per generated token, after appending the token to
    `input_ids`. `on_step`, when given, runs after the choices took their tokens (a stream
    sends the new text from there).
    """

    def __init__(
        self,
        choices: Sequence[ChoiceText],
        cancelled: Sequence[threading.Event] = (),
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self._choices = choices
        self._cancelled = cancelled
        self._on_step = on_step

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        tokens = input_ids[:, -1].tolist()
        done = [choice.add(token) for choice, token in zip(self._choices, tokens, strict=True)]
        if self._on_step is not None:
            self._on_step()
        if any(event.is_set() for event in self._cancelled):
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
