"""IncrementalDecoder: after every token its text is what decoding all the ids gives, for
the tokenizer kinds that make a seam hard (byte-level BPE, SentencePiece's dropped leading
space, WordPiece's clean-up of spaces), over generations longer than several windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workers.hf.tasks import incremental_decoding
from workers.hf.tasks.incremental_decoding import SETTLE_TOKENS, IncrementalDecoder

LONG = 4 * (SETTLE_TOKENS + incremental_decoding.CONTEXT_TOKENS)
TEXT = "hello world\n the cat sat. on the mat , café 東京 naïve 🙂 end"


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoints: dict[str, Path]) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_checkpoints["tiny-gpt2"]))


@pytest.fixture(scope="module")
def sentencepiece() -> Any:
    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [decoders.Metaspace(prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
    )
    special = ["<unk>", *(f"<0x{b:02X}>" for b in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False)
    backend.train_from_iterator([TEXT] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def wordpiece(tiny_checkpoints: dict[str, Path]) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoints["tiny-bert-sentiment"]))
    tokenizer.clean_up_tokenization_spaces = True  # " ." -> ".": joins text across a seam
    return tokenizer


def _texts_step_by_step(tokenizer: Any, ids: list[int], **options: Any) -> list[str]:
    decoder = IncrementalDecoder(tokenizer, **options)
    return [decoder.extend([token]) for token in ids]


def _full_decodes(tokenizer: Any, ids: list[int], **options: Any) -> list[str]:
    return [tokenizer.decode(ids[: n + 1], **options) for n in range(len(ids))]


@pytest.mark.parametrize("kind", ["gpt2", "sentencepiece", "wordpiece"])
def test_every_step_matches_decoding_all_the_ids(kind: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(kind)
    ids = (tokenizer(TEXT, add_special_tokens=False)["input_ids"] * 8)[:LONG]
    assert len(ids) == LONG
    options = {"skip_special_tokens": True}
    assert _texts_step_by_step(tokenizer, ids, **options) == _full_decodes(
        tokenizer, ids, **options
    )


def test_ids_added_several_at_a_time_give_the_same_text(gpt2: Any) -> None:
    ids = (gpt2(TEXT)["input_ids"] * 8)[:LONG]
    decoder = IncrementalDecoder(gpt2)
    for start in range(0, LONG, 7):
        text = decoder.extend(ids[start : start + 7])
        assert text == gpt2.decode(ids[: start + 7])


def test_a_step_decodes_a_bounded_window(gpt2: Any) -> None:
    decoded: list[int] = []
    original = gpt2.decode

    class Counting:
        def decode(self, ids: list[int], **options: Any) -> str:
            decoded.append(len(ids))
            return str(original(ids, **options))

    decoder = IncrementalDecoder(Counting())
    for token in (gpt2(TEXT)["input_ids"] * 40)[: 10 * LONG]:
        decoder.extend([token])
    # a window waits for a character's last byte before it settles: up to 3 more tokens
    assert max(decoded) <= SETTLE_TOKENS + incremental_decoding.CONTEXT_TOKENS + 3


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_ids_decode_as_a_whole_would(
    data: st.DataObject, gpt2: Any, sentencepiece: Any, wordpiece: Any
) -> None:
    # random ids include lone UTF-8 continuation bytes and special tokens mid-text
    tokenizer = data.draw(st.sampled_from([gpt2, sentencepiece, wordpiece]))
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=3 * SETTLE_TOKENS))
    options = {"skip_special_tokens": True}
    assert _texts_step_by_step(tokenizer, ids, **options) == _full_decodes(
        tokenizer, ids, **options
    )


def test_a_space_after_skipped_special_tokens_is_kept(sentencepiece: Any) -> None:
    # found by the test above: a context of special tokens only shows no text, and the
    # window's first token then lost its leading space ("\n ," came out as "\n,")
    newline, comma = (sentencepiece(t, add_special_tokens=False)["input_ids"] for t in "\n,")
    ids = [0] * SETTLE_TOKENS + newline + [0] * SETTLE_TOKENS + comma
    texts = _texts_step_by_step(sentencepiece, ids, skip_special_tokens=True)
    assert texts[-1] == sentencepiece.decode(ids, skip_special_tokens=True) == "\n ,"
