"""llm/v1/chat, llm/v1/completions and llm/v1/embeddings through PipelineModel, on tiny
checkpoints (and the real MiniLM): OpenAI's fields, stop sequences, n, max_tokens,
finish_reason and usage checked exactly, streaming against the unary answer."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext, Outputs, Request
from modelyard.signature import resolve_parameters
from workers.hf import PipelineModel
from workers.hf.tasks.llm_choices import ChoiceText

PROMPT = "The weather is"
HELLO = [{"role": "user", "content": "Hello there"}]
# Greedy text from the tiny GPT-2 repeats one word; this makes it vary, so that stop
# sequences have something to find.
VARIED: dict[str, Any] = {"no_repeat_ngram_size": 1}


def _load(task: str, source: Path) -> PipelineModel:
    model = PipelineModel(task)
    model.load(LoadContext(source=str(source), device="cpu"))
    return model


@pytest.fixture(scope="module")
def chat(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("llm/v1/chat", tiny_checkpoints["tiny-gpt2-chat"])


@pytest.fixture(scope="module")
def completions(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("llm/v1/completions", tiny_checkpoints["tiny-gpt2"])


@pytest.fixture(scope="module")
def embeddings(minilm_path: Path) -> PipelineModel:
    return _load("llm/v1/embeddings", minilm_path)


def _request(model: PipelineModel, inputs: dict[str, Any], **overrides: Any) -> Request:
    # as the worker does: defaults plus the request's checked overrides
    params = resolve_parameters(model.parameters, model.default_parameters, overrides)
    return Request(inputs, params)


def _complete(model: PipelineModel, prompt: str = PROMPT, **overrides: Any) -> Outputs:
    [result] = model.predict([_request(model, {"prompt": prompt}, **overrides)])
    return result


def _chat(model: PipelineModel, messages: list[dict[str, Any]], **overrides: Any) -> Outputs:
    [result] = model.predict([_request(model, {"messages": messages}, **overrides)])
    return result


def _drain(stream: Generator[Outputs, None, Outputs]) -> tuple[list[Outputs], Outputs]:
    chunks = []
    while True:
        try:
            chunks.append(next(stream))
        except StopIteration as done:
            return chunks, done.value


def _stream(model: PipelineModel, inputs: dict[str, Any], **overrides: Any) -> Any:
    return _drain(model.predict_stream(_request(model, inputs, **overrides), threading.Event()))


def _streamed_text(chunks: list[Outputs], index: int = 0) -> str:
    """What a client assembles from a stream's chunks for one choice."""
    pieces = []
    for chunk in chunks:
        [choice] = chunk["choices"]
        if choice["index"] == index:
            delta = choice["delta"] if "delta" in choice else {"content": choice["text"]}
            pieces.append(delta.get("content", ""))
    return "".join(pieces)


def _tokens(model: PipelineModel, text: str) -> int:
    return len(model.pipeline.tokenizer(text, add_special_tokens=False)["input_ids"])


def _crossing_stop(text: str) -> str:
    """A stop sequence found in `text` that starts inside one word-token and ends inside
    the next (so it spans two tokens and begins mid-token)."""
    words = text.split()
    assert len(words) > 4 and len(words[2]) > 1 and len(words[3]) > 1, text
    return words[2][1:] + " " + words[3][:2]


# -- signature and metadata ----------------------------------------------------------------


def test_chat_declares_openai_fields(chat: PipelineModel) -> None:
    assert chat.task == "llm/v1/chat"
    assert chat.streaming is True
    assert [f.name for f in chat.inputs] == ["messages"]
    assert [f.name for f in chat.outputs] == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
    ]
    names = {f.name for f in chat.parameters}
    assert {"temperature", "top_p", "top_k", "max_tokens", "stop", "n", "stream"} <= names
    assert {"seed", "min_new_tokens", "num_beams", "no_repeat_ngram_size"} <= names
    assert chat.default_parameters["temperature"] == 0.0  # greedy unless asked
    assert chat.default_parameters["n"] == 1


def test_tasks_are_known_before_loading() -> None:
    assert PipelineModel("llm/v1/completions").task == "llm/v1/completions"
    assert [f.name for f in PipelineModel("llm/v1/embeddings").inputs] == ["input"]


def test_a_chat_task_on_a_classifier_is_refused(tiny_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument, match="causal language model"):
        _load("llm/v1/chat", tiny_checkpoints["tiny-bert-sentiment"])


# -- chat ----------------------------------------------------------------------------------


def test_chat_answers_as_openai_does(chat: PipelineModel) -> None:
    before = int(time.time())
    result = _chat(chat, HELLO, max_tokens=5)
    assert result["object"] == "chat.completion"
    assert result["id"].startswith("chatcmpl-")
    assert before <= result["created"] <= time.time()
    assert result["model"] == "tiny-gpt2-chat"
    [choice] = result["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    text = choice["message"]["content"]
    # prompt_tokens: the rendered template, exactly; completion_tokens: max_tokens, which
    # is the tokenizer's count of the returned text
    prompt = _tokens(chat, "user: Hello there\nassistant:")
    assert result["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }
    assert _tokens(chat, text) == 5


def test_every_response_has_its_own_id(chat: PipelineModel) -> None:
    first, second = (_chat(chat, HELLO, max_tokens=1)["id"] for _ in range(2))
    assert first != second


def test_a_message_name_reaches_the_template(chat: PipelineModel) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "Bob"},
    ]
    usage = _chat(chat, messages, max_tokens=1)["usage"]
    assert usage["prompt_tokens"] == _tokens(chat, "system: Be brief.\nuser Bob: Hi\nassistant:")


def test_a_model_without_a_chat_template_refuses_chat(tiny_checkpoints: dict[str, Path]) -> None:
    no_template = _load("llm/v1/chat", tiny_checkpoints["tiny-gpt2"])
    with pytest.raises(InvalidArgument, match="model 'tiny-gpt2' has no chat template"):
        _chat(no_template, HELLO)


def test_messages_the_template_refuses_are_invalid(chat: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match="chat template refused the messages: roles are"):
        _chat(chat, [{"role": "tool", "content": "42"}])


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "at least one message"),
        ([{"role": "user"}], r"messages\[0\]' needs a content"),
        ([{"role": "", "content": "x"}], r"messages\[0\]' needs a role"),
        ([HELLO[0], {"role": "user", "content": "x", "tool": 1}], r"messages\[1\]' has an unknown"),
        ([{"role": "user", "content": "x", "name": 3}], "name that is not a string"),
    ],
)
def test_malformed_messages_are_invalid(
    chat: PipelineModel, messages: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(InvalidArgument, match=expected):
        _chat(chat, messages)


# -- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"n": 17, "temperature": 1.0}, "n"),
        ({"n": 2}, "n"),  # greedy: two identical choices
        ({"stop": ""}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ["a", 1]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"min_new_tokens": -1}, "min_new_tokens"),
        ({"min_new_tokens": 5, "max_tokens": 2}, "min_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 2, "temperature": 0.7}, "num_beams"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": math.nan}, "repetition_penalty"),
        ({"max_tokens": 200}, "max_tokens"),  # beyond the 128-token context
    ],
)
def test_bad_parameters_are_invalid_and_named(
    completions: PipelineModel, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"'{field}'|{field} \\(") as caught:
        _complete(completions, **overrides)
    assert field in caught.value.message


def test_stream_true_needs_predict_stream(completions: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match=r"'stream' is true.*PredictStream"):
        _complete(completions, stream=True)


def test_a_bad_request_fails_alone_in_its_batch(completions: PipelineModel) -> None:
    good = _request(completions, {"prompt": PROMPT}, max_tokens=2)
    bad = _request(completions, {"prompt": PROMPT}, temperature=-1.0)
    ok, error = completions.predict([good, bad])
    assert ok["usage"]["completion_tokens"] == 2
    refused: object = error  # typed as outputs; the slot holds the request's error
    assert isinstance(refused, InvalidArgument) and "temperature" in refused.message


# -- completions, max_tokens and finish_reason ----------------------------------------------


def test_completions_answer_as_openai_does(completions: PipelineModel) -> None:
    result = _complete(completions, max_tokens=4)
    assert result["object"] == "text_completion"
    assert result["id"].startswith("cmpl-")
    [choice] = result["choices"]
    assert set(choice) == {"index", "text", "finish_reason"}
    assert choice["finish_reason"] == "length"
    assert result["usage"]["prompt_tokens"] == _tokens(completions, PROMPT)
    assert result["usage"]["completion_tokens"] == 4 == _tokens(completions, choice["text"])


def test_without_max_tokens_a_choice_fills_the_context(completions: PipelineModel) -> None:
    result = _complete(completions)
    usage = result["usage"]
    assert usage["total_tokens"] == 128  # the tiny checkpoints' context
    assert result["choices"][0]["finish_reason"] == "length"


def test_requests_with_different_limits_batch_as_they_run_alone(
    completions: PipelineModel,
) -> None:
    shapes = [{"max_tokens": 3}, {"max_tokens": 7, **VARIED}, {"max_tokens": 7, "stop": " m"}]
    prompts = [PROMPT, "Alice moved from", "The cat sleeps on the"]
    alone = [_complete(completions, p, **s) for p, s in zip(prompts, shapes, strict=True)]
    batched = completions.predict(
        [_request(completions, {"prompt": p}, **s) for p, s in zip(prompts, shapes, strict=True)]
    )
    for one, many in zip(alone, batched, strict=True):
        assert many["choices"] == one["choices"]
        assert many["usage"] == one["usage"]


# -- stop sequences --------------------------------------------------------------------------


def _tokens_until(model: PipelineModel, stop: str, **overrides: Any) -> int:
    """The fewest generated tokens whose text contains `stop`, found without stop."""
    for count in range(1, 40):
        if stop in _complete(model, max_tokens=count, **overrides)["choices"][0]["text"]:
            return count
    raise AssertionError(f"{stop!r} never appears")


def test_a_stop_sequence_across_tokens_ends_the_choice_before_it(
    completions: PipelineModel,
) -> None:
    unstopped = _complete(completions, max_tokens=12, **VARIED)["choices"][0]["text"]
    stop = _crossing_stop(unstopped)
    result = _complete(completions, max_tokens=12, stop=stop, **VARIED)
    [choice] = result["choices"]
    assert choice["text"] == unstopped[: unstopped.index(stop)]
    assert choice["finish_reason"] == "stop"
    # counted up to the token that completed the stop sequence, where generation ended
    assert result["usage"]["completion_tokens"] == _tokens_until(completions, stop, **VARIED)


def test_the_earliest_of_several_stop_sequences_wins(completions: PipelineModel) -> None:
    unstopped = _complete(completions, max_tokens=12, **VARIED)["choices"][0]["text"]
    words = unstopped.split()
    later, earlier = f" {words[4]} ", f" {words[2]} "
    assert unstopped.index(earlier) < unstopped.index(later)
    result = _complete(completions, max_tokens=12, stop=[later, earlier], **VARIED)
    assert result["choices"][0]["text"] == unstopped[: unstopped.index(earlier)]


def test_a_stop_sequence_that_never_appears_changes_nothing(completions: PipelineModel) -> None:
    plain = _complete(completions, max_tokens=6)
    stopped = _complete(completions, max_tokens=6, stop=["zebra", "\n\n"])
    assert stopped["choices"] == plain["choices"]


def test_the_choice_text_holds_back_what_may_start_a_stop_sequence(
    tiny_checkpoints: dict[str, Path], completions: PipelineModel
) -> None:
    tokenizer = completions.pipeline.tokenizer
    choice = ChoiceText(tokenizer, ["cat dog"], {tokenizer.eos_token_id}, limit=10)
    for word in (" the", " cat"):
        choice.add(tokenizer(word)["input_ids"][0])
    assert choice.take() == " the "  # "cat" may be the start of "cat dog"
    choice.add(tokenizer(" sleeps")["input_ids"][0])
    assert choice.take() == "cat sleeps"
    assert not choice.finished


def test_an_unfinished_character_is_held_back(completions: PipelineModel) -> None:
    tokenizer = completions.pipeline.tokenizer
    first, second = tokenizer("é")["input_ids"]  # two byte tokens
    choice = ChoiceText(tokenizer, [], {tokenizer.eos_token_id}, limit=10)
    choice.add(first)
    assert choice.take() == ""
    choice.add(second)
    assert choice.take() == "é"


def test_an_end_of_text_token_stops_the_choice_and_counts(completions: PipelineModel) -> None:
    tokenizer = completions.pipeline.tokenizer
    choice = ChoiceText(tokenizer, [], {tokenizer.eos_token_id}, limit=10)
    choice.add(tokenizer(" cat")["input_ids"][0])
    assert choice.add(tokenizer.eos_token_id) is True
    assert (choice.text, choice.finish_reason, len(choice.ids)) == (" cat", "stop", 2)


# -- n, sampling and seeds -------------------------------------------------------------------

SAMPLED: dict[str, Any] = {"temperature": 1.0, "seed": 7, "max_tokens": 6}


def test_n_sampled_choices_are_returned_and_counted(completions: PipelineModel) -> None:
    result = _complete(completions, n=3, **SAMPLED)
    choices = result["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["text"] for c in choices}) > 1
    # the prompt once, every choice's tokens
    assert result["usage"]["prompt_tokens"] == _tokens(completions, PROMPT)
    assert result["usage"]["completion_tokens"] == 3 * 6


def test_a_seed_repeats_the_choices_even_in_a_batch(completions: PipelineModel) -> None:
    alone = _complete(completions, n=2, **SAMPLED)["choices"]
    assert _complete(completions, n=2, **SAMPLED)["choices"] == alone
    neighbour = _request(completions, {"prompt": "Bob works for"}, n=3, **{**SAMPLED, "seed": 1})
    mine = _request(completions, {"prompt": PROMPT}, n=2, **SAMPLED)
    _, batched = completions.predict([neighbour, mine])
    assert batched["choices"] == alone
    other_seed = _complete(completions, n=2, **{**SAMPLED, "seed": 8})["choices"]
    assert other_seed != alone


def test_beam_search_returns_the_n_best_beams(completions: PipelineModel) -> None:
    result = _complete(completions, n=2, num_beams=3, max_tokens=5)
    texts = [c["text"] for c in result["choices"]]
    assert len(texts) == 2 and texts[0] != texts[1]
    assert result["usage"]["completion_tokens"] == sum(_tokens(completions, t) for t in texts)


def test_beam_search_applies_stop_sequences(completions: PipelineModel) -> None:
    unstopped = _complete(completions, num_beams=2, max_tokens=8)["choices"][0]["text"]
    stop = unstopped.split()[1]
    [choice] = _complete(completions, num_beams=2, max_tokens=8, stop=stop)["choices"]
    assert choice == {
        "index": 0,
        "text": unstopped[: unstopped.index(stop)],
        "finish_reason": "stop",
    }


# -- streaming -------------------------------------------------------------------------------


def test_chat_chunks_add_up_to_the_unary_answer(chat: PipelineModel) -> None:
    unary = _chat(chat, HELLO, max_tokens=8, **VARIED)
    chunks, final = _stream(chat, {"messages": HELLO}, max_tokens=8, **VARIED)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert {c["id"] for c in chunks} == {final["id"]}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len(chunks) > 3  # text arrives token by token, not at the end
    assert _streamed_text(chunks) == unary["choices"][0]["message"]["content"]
    assert final["choices"] == unary["choices"]
    assert final["usage"] == unary["usage"]


def test_streamed_text_never_shows_a_stop_sequence(completions: PipelineModel) -> None:
    unstopped = _complete(completions, max_tokens=12, **VARIED)["choices"][0]["text"]
    stop = _crossing_stop(unstopped)
    chunks, final = _stream(completions, {"prompt": PROMPT}, max_tokens=12, stop=stop, **VARIED)
    assert _streamed_text(chunks) == unstopped[: unstopped.index(stop)]
    assert chunks[-1]["choices"] == [{"index": 0, "text": "", "finish_reason": "stop"}]
    assert final["choices"][0]["text"] == _streamed_text(chunks)


def test_text_held_back_for_a_stop_sequence_is_sent_when_it_is_not_one(
    completions: PipelineModel,
) -> None:
    unstopped = _complete(completions, max_tokens=12, **VARIED)["choices"][0]["text"]
    almost = unstopped.split()[2] + " zebra"  # its start appears; it never does whole
    chunks, final = _stream(completions, {"prompt": PROMPT}, max_tokens=12, stop=almost, **VARIED)
    assert _streamed_text(chunks) == unstopped
    assert final["choices"][0]["finish_reason"] == "length"


def test_n_choices_stream_side_by_side(completions: PipelineModel) -> None:
    chunks, final = _stream(completions, {"prompt": PROMPT}, n=2, **SAMPLED)
    assert final["choices"] == _complete(completions, n=2, **SAMPLED)["choices"]
    for choice in final["choices"]:
        assert _streamed_text(chunks, choice["index"]) == choice["text"]
    ends = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(e["index"] for e in ends) == [0, 1]


def test_stream_false_sends_only_the_result(completions: PipelineModel) -> None:
    chunks, final = _stream(completions, {"prompt": PROMPT}, max_tokens=3, stream=False)
    assert chunks == []
    assert final["usage"]["completion_tokens"] == 3


def test_beam_search_cannot_stream(completions: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match="'num_beams' above 1 cannot stream"):
        _stream(completions, {"prompt": PROMPT}, num_beams=2)


def test_the_worker_path_streams_the_same_chunks_on_the_calling_thread(
    chat: PipelineModel,
) -> None:
    request = _request(chat, {"messages": [{"role": "user", "content": "Hi"}]}, max_tokens=12)
    emitting: set[int] = set()
    alive: set[threading.Thread] = set()
    pushed: list[Outputs] = []

    def emit(chunk: Outputs) -> None:
        emitting.add(threading.get_ident())
        alive.update(threading.enumerate())
        pushed.append(chunk)

    before = set(threading.enumerate())
    final = chat.predict_stream_to(request, threading.Event(), emit)
    # generated here, on the calling thread: no generation thread in between
    assert emitting == {threading.get_ident()} and alive <= before
    pulled, pulled_final = _drain(chat.predict_stream(request, threading.Event()))

    def content(chunks: list[Outputs]) -> list[Any]:  # each chunk's id and time differ
        return [chunk["choices"] for chunk in chunks]

    assert content(pushed) == content(pulled) and len(pushed) > 2
    assert final["choices"] == pulled_final["choices"] and final["usage"] == pulled_final["usage"]
    assert _streamed_text(pushed) == final["choices"][0]["message"]["content"]


def test_the_worker_path_stops_when_stopped(completions: PipelineModel) -> None:
    stop = threading.Event()
    final = completions.predict_stream_to(
        _request(completions, {"prompt": PROMPT}), stop, lambda chunk: stop.set()
    )
    assert final["usage"]["completion_tokens"] < 100  # it would fill the context otherwise


def test_a_cancelled_stream_stops_generating(completions: PipelineModel) -> None:
    stop = threading.Event()
    stream = completions.predict_stream(_request(completions, {"prompt": PROMPT}), stop)
    next(stream)
    stop.set()
    _, final = _drain(stream)
    assert final["usage"]["completion_tokens"] < 100  # it would fill the context otherwise


# -- embeddings --------------------------------------------------------------------------------


def test_embeddings_answer_as_openai_does(embeddings: PipelineModel, minilm_path: Path) -> None:
    texts = ["A man is playing a guitar.", "The stock market fell sharply today."]
    [result] = embeddings.predict([_request(embeddings, {"input": texts})])
    assert result["object"] == "list"
    assert result["model"] == minilm_path.name
    assert [(d["object"], d["index"]) for d in result["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
    ]
    sentence = _load("sentence-embedding", minilm_path)
    expected = sentence.predict([_request(sentence, {"text": t}) for t in texts])
    for data, want in zip(result["data"], expected, strict=True):
        vector = np.array(data["embedding"], dtype=np.float32)
        assert vector.shape == (384,)
        np.testing.assert_allclose(vector, want["embedding"], atol=1e-5)
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)
    tokens = sum(len(embeddings.pipeline.tokenizer(t)["input_ids"]) for t in texts)
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_one_string_is_one_embedding(embeddings: PipelineModel) -> None:
    [result] = embeddings.predict([_request(embeddings, {"input": "hello"})])
    assert len(result["data"]) == 1


@pytest.mark.parametrize("value", [[], ["ok", 3], 5, ["x"] * 2049])
def test_bad_embedding_input_is_invalid(embeddings: PipelineModel, value: Any) -> None:
    with pytest.raises(InvalidArgument, match="input 'input' must be a string or a list"):
        embeddings.predict([_request(embeddings, {"input": value})])
