"""text-generation through PipelineModel: batching, streaming, cancellation."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext, Outputs, Request
from modelyard.signature import resolve_parameters
from workers.hf import PipelineModel
from workers.hf.tasks.decoding import Decoder
from workers.hf.tasks.text_streaming import IncrementalTextStreamer


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    model = PipelineModel("text-generation")
    model.load(LoadContext(source=str(tiny_checkpoints["tiny-gpt2"]), device="cpu"))
    return model


def _request(model: PipelineModel, text: str, **overrides: Any) -> Request:
    # as the worker does: defaults plus the request's checked overrides
    params = resolve_parameters(model.parameters, model.default_parameters, overrides)
    return Request({"text": text}, params)


def _drain(stream: Generator[Outputs, None, Outputs]) -> tuple[list[Outputs], Outputs]:
    chunks = []
    while True:
        try:
            chunks.append(next(stream))
        except StopIteration as done:
            return chunks, done.value


class _StopAfter(threading.Event):
    """An event that reads as set from its n-th check on: a cancel after n tokens."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self._left = checks

    def is_set(self) -> bool:
        self._left -= 1
        return self._left <= 0 or super().is_set()


def test_metadata(gpt2: PipelineModel) -> None:
    assert gpt2.task == "text-generation"
    assert gpt2.streaming is True
    assert [f.name for f in gpt2.inputs] == ["text"]
    assert [f.name for f in gpt2.outputs] == ["text"]
    assert gpt2.default_parameters["max_new_tokens"] == 32
    assert gpt2.default_parameters["do_sample"] is False


def test_generates_text(gpt2: PipelineModel) -> None:
    [result] = gpt2.predict([_request(gpt2, "Alice lives in", max_new_tokens=8)])
    assert set(result) == {"text"}
    assert isinstance(result["text"], str) and result["text"]
    assert not result["text"].startswith("Alice lives in")


def test_return_full_text_prepends_the_prompt(gpt2: PipelineModel) -> None:
    short, full = gpt2.predict(
        [
            _request(gpt2, "The weather is", max_new_tokens=6),
            _request(gpt2, "The weather is", max_new_tokens=6, return_full_text=True),
        ]
    )
    assert full["text"] == "The weather is" + short["text"]


def test_a_mixed_batch_matches_one_by_one_calls(
    gpt2: PipelineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [
        _request(gpt2, "Alice lives in", max_new_tokens=4),
        _request(gpt2, "The quick brown fox jumps over the lazy", max_new_tokens=12),
        _request(gpt2, "Hi", max_new_tokens=4),
        _request(gpt2, "Bob works for", max_new_tokens=12),
        _request(gpt2, "Music", max_new_tokens=4, return_full_text=True),
    ]
    alone = [gpt2.predict([r])[0] for r in batch]

    generate = Decoder.generate
    calls: list[int] = []

    def counting(decoder: Decoder, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))
        return generate(decoder, **kwargs)

    monkeypatch.setattr(Decoder, "generate", counting)
    assert gpt2.predict(batch) == alone
    # one generate call per distinct parameter set, prompts of different lengths padded
    assert sorted(calls) == [1, 2, 2]


def test_stream_chunks_add_up_to_the_final_text(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=40)
    chunks, final = _drain(gpt2.predict_stream(request, threading.Event()))
    assert len(chunks) > 1
    assert all(set(c) == {"text"} and c["text"] for c in chunks)  # no empty pieces
    assert "".join(c["text"] for c in chunks) == final["text"]
    assert final == gpt2.predict([request])[0]


def test_stream_with_full_text_starts_with_the_prompt(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=20, return_full_text=True)
    chunks, final = _drain(gpt2.predict_stream(request, threading.Event()))
    assert chunks[0] == {"text": "Alice lives in"}
    assert "".join(c["text"] for c in chunks) == final["text"]


def test_stop_ends_generation_at_the_next_token(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=60)
    _, stopped = _drain(gpt2.predict_stream(request, _StopAfter(checks=3)))
    # stopping criteria are checked once per token: three tokens, then stop
    assert stopped == gpt2.predict([_request(gpt2, "Alice lives in", max_new_tokens=3)])[0]
    assert len(stopped["text"]) < len(gpt2.predict([request])[0]["text"])


def test_closing_the_stream_stops_the_generation_thread(
    gpt2: PipelineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate = Decoder.generate
    generated: list[int] = []

    def measuring(decoder: Decoder, **kwargs: Any) -> Any:
        output = generate(decoder, **kwargs)
        generated.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(Decoder, "generate", measuring)
    request = _request(gpt2, "Alice lives in", max_new_tokens=100)
    stream = gpt2.predict_stream(request, threading.Event())
    next(stream)
    stream.close()  # what the worker does when the caller goes away
    assert [t for t in threading.enumerate() if t.name == "modelyard-generate"] == []
    assert generated and generated[0] < 100


def test_a_prompt_too_long_for_the_context_is_invalid(gpt2: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match="context holds 128"):
        gpt2.predict([_request(gpt2, "word " * 200)])
    with pytest.raises(InvalidArgument, match="max_new_tokens"):
        gpt2.predict([_request(gpt2, "Hi", max_new_tokens=500)])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_new_tokens": 0}, "'max_new_tokens' must be greater than 0"),
        ({"temperature": 0.0}, "'temperature' must be greater than 0"),
        ({"top_p": 1.5}, "'top_p' must be at most 1"),
        ({"stream_interval_ms": -5.0}, "'stream_interval_ms' must be 0 or more, got -5.0"),
    ],
)
def test_bad_generation_parameters_are_invalid(
    gpt2: PipelineModel, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        gpt2.predict([_request(gpt2, "Hi", **overrides)])


def test_sampling_runs(gpt2: PipelineModel) -> None:
    [result] = gpt2.predict(
        [
            _request(
                gpt2, "Hi", do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=5
            )
        ]
    )
    assert isinstance(result["text"], str)


def test_an_empty_prompt_generates_from_the_start(gpt2: PipelineModel) -> None:
    [result] = gpt2.predict([_request(gpt2, "", max_new_tokens=5)])
    assert isinstance(result["text"], str)


def test_the_second_generator_differs(
    gpt2: PipelineModel, tiny_checkpoints: dict[str, Path]
) -> None:
    distil = PipelineModel(None)
    distil.load(LoadContext(source=str(tiny_checkpoints["tiny-distilgpt2"]), device="cpu"))
    prompt = "Alice lives in"
    assert distil.task == "text-generation"
    assert distil.predict([_request(distil, prompt)]) != gpt2.predict([_request(gpt2, prompt)])


def test_the_worker_path_generates_on_the_calling_thread(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=40)
    threads: set[int] = set()
    chunks: list[Outputs] = []

    def emit(chunk: Outputs) -> None:
        threads.add(threading.get_ident())
        chunks.append(chunk)

    final = gpt2.predict_stream_to(request, threading.Event(), emit)
    assert threads == {threading.get_ident()}  # no generation thread in between
    assert len(chunks) > 1 and all(c["text"] for c in chunks)
    assert "".join(c["text"] for c in chunks) == final["text"]
    assert final == gpt2.predict([request])[0]


def test_the_worker_path_starts_with_the_prompt_for_full_text(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=20, return_full_text=True)
    chunks: list[Outputs] = []
    final = gpt2.predict_stream_to(request, threading.Event(), chunks.append)
    assert chunks[0] == {"text": "Alice lives in"}
    assert "".join(c["text"] for c in chunks) == final["text"]


def test_the_worker_path_stops_at_the_next_token(gpt2: PipelineModel) -> None:
    request = _request(gpt2, "Alice lives in", max_new_tokens=60)
    stopped = gpt2.predict_stream_to(request, _StopAfter(checks=3), lambda chunk: None)
    assert stopped == gpt2.predict([_request(gpt2, "Alice lives in", max_new_tokens=3)])[0]


def test_a_bad_request_fails_the_worker_path_before_any_chunk(gpt2: PipelineModel) -> None:
    chunks: list[Outputs] = []
    with pytest.raises(InvalidArgument, match="max_new_tokens"):
        gpt2.predict_stream_to(
            _request(gpt2, "Hi", max_new_tokens=500), threading.Event(), chunks.append
        )
    assert chunks == []


def _stream_ids(tokenizer: Any, ids: list[int]) -> list[str]:
    pieces: list[str] = []
    streamer = IncrementalTextStreamer(tokenizer, pieces.append)
    streamer.put(torch.tensor([[0]]))  # the prompt, which a streamer skips
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return pieces


def _stream_ids_timed(tokenizer: Any, ids: list[int], interval: float) -> list[tuple[float, str]]:
    """The pieces and when each went out, for a token every 2 ms of a fake clock."""
    clock = [0.0]
    sent: list[tuple[float, str]] = []
    streamer = IncrementalTextStreamer(
        tokenizer,
        lambda piece: sent.append((clock[0], piece)),
        interval=interval,
        clock=lambda: clock[0],
    )
    streamer.put(torch.tensor([[0]]))  # the prompt, which a streamer skips
    for token in ids:
        streamer.put(torch.tensor([token]))
        clock[0] += 0.002
    streamer.end()
    return sent


def test_pieces_go_out_at_most_once_an_interval(gpt2: PipelineModel) -> None:
    tokenizer = gpt2.pipeline.tokenizer
    ids = tokenizer(" one two three four five six seven eight nine ten eleven twelve")["input_ids"]
    every_word = _stream_ids_timed(tokenizer, ids, interval=0.0)
    sent = _stream_ids_timed(tokenizer, ids, interval=0.02)  # ten tokens an interval
    assert "".join(p for _, p in sent) == "".join(p for _, p in every_word) == tokenizer.decode(ids)
    # the first word goes out as early as with no interval (after a lone space, if any)
    first_word = next(i for i, (_, piece) in enumerate(every_word) if not piece.isspace())
    assert sent[: first_word + 1] == every_word[: first_word + 1]
    times = [at for at, _ in sent[first_word:-1]]  # the last is end()'s flush
    assert all(later - earlier >= 0.02 - 1e-9 for earlier, later in itertools.pairwise(times))
    assert 2 < len(sent) <= len(ids) // 10 + 2 < len(every_word)


def test_streamed_pieces_keep_the_space_after_a_newline() -> None:
    # SentencePiece-style decoding drops a leading space; transformers' TextStreamer
    # restarts decoding after each newline and so loses the space in "\n the"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"], show_progress=False)
    backend.train_from_iterator(["hello world\n the cat sat on the mat"] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)  # type: ignore[no-untyped-call]
    ids = tokenizer("hello world\n the cat")["input_ids"]
    pieces = _stream_ids(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids) == "hello world\n the cat"
    assert all(pieces)


def test_streamed_pieces_never_split_a_character(gpt2: PipelineModel) -> None:
    tokenizer = gpt2.pipeline.tokenizer
    ids = tokenizer("café 東京 naïve")["input_ids"]
    pieces = _stream_ids(tokenizer, ids)
    assert "".join(pieces) == "café 東京 naïve"
    assert not any("\ufffd" in piece for piece in pieces)
