"""Classification, zero-shot, entities, fill-mask and embeddings through PipelineModel."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext, Outputs, Request
from modelyard.signature import resolve_parameters
from workers.hf import PipelineModel
from workers.hf.tasks.base import leading_text


def _load(task: str | None, path: Path) -> PipelineModel:
    model = PipelineModel(task)
    model.load(LoadContext(source=str(path), device="cpu"))
    return model


def _request(model: PipelineModel, inputs: dict[str, Any], **overrides: Any) -> Request:
    # as the worker does: defaults plus the request's checked overrides
    params = resolve_parameters(model.parameters, model.default_parameters, overrides)
    return Request(inputs, params)


def _text(model: PipelineModel, text: str, **overrides: Any) -> Request:
    return _request(model, {"text": text}, **overrides)


def _one_by_one(model: PipelineModel, batch: list[Request]) -> list[Outputs]:
    return [model.predict([request])[0] for request in batch]


def _assert_ranked(result: Outputs) -> None:
    assert result["label"] == result["labels"][0]
    assert result["score"] == result["scores"][0]
    assert all(isinstance(label, str) for label in result["labels"])
    assert all(type(score) is float for score in result["scores"])  # no numpy scalars
    assert result["scores"] == sorted(result["scores"], reverse=True)


def _assert_close_results(got: list[Outputs], want: list[Outputs]) -> None:
    """Equal up to float noise: padding a batch changes the last bits of a forward pass."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in g:
            if isinstance(g[key], np.ndarray):
                np.testing.assert_allclose(g[key], w[key], atol=1e-5)
            elif key in ("score", "scores"):
                assert g[key] == pytest.approx(w[key], abs=1e-5)
            else:
                assert g[key] == w[key], key


# -- text-classification -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("sentiment-analysis", tiny_checkpoints["tiny-bert-sentiment"])


def test_classification_ranks_all_labels(sentiment: PipelineModel) -> None:
    assert sentiment.task == "text-classification"
    [result] = sentiment.predict([_text(sentiment, "I loved this movie")])
    assert set(result) == {"label", "score", "labels", "scores"}
    assert sorted(result["labels"]) == ["NEGATIVE", "POSITIVE"]
    _assert_ranked(result)
    assert sum(result["scores"]) == pytest.approx(1.0)


def test_classification_batch_with_different_top_k(sentiment: PipelineModel) -> None:
    batch = [
        _text(sentiment, "I loved this movie", top_k=1),
        _text(sentiment, "The service was slow and the waiter was rude"),
        _text(sentiment, "ok", top_k=2),
    ]
    results = sentiment.predict(batch)
    assert [len(r["labels"]) for r in results] == [1, 2, 2]
    _assert_close_results(results, _one_by_one(sentiment, batch))


def test_classification_batches_agree_with_the_transformers_pipeline(
    sentiment: PipelineModel,
) -> None:
    texts = ["I love it", "This is terrible, awful and slow.", "ok"]
    batched = sentiment.predict([_text(sentiment, t) for t in texts])
    expected = sentiment.pipeline(texts, top_k=None)  # the pipeline's own answer, one by one
    for got, want in zip(batched, expected, strict=True):
        assert got["labels"] == [w["label"] for w in want]
        assert got["scores"] == pytest.approx([w["score"] for w in want], abs=1e-5)


def test_classification_truncates_long_text(sentiment: PipelineModel) -> None:
    [result] = sentiment.predict([_text(sentiment, "good " * 400)])
    _assert_ranked(result)


def _varied_text(words: int) -> str:
    vocabulary = ["good", "bad", "film", "unbelievably", "a", "plot", "x" * 150, "of", "the"]
    return " ".join(vocabulary[(i * 7) % len(vocabulary)] for i in range(words))


@pytest.mark.parametrize("max_tokens", [8, 128])
def test_leading_text_keeps_what_truncation_keeps(
    sentiment: PipelineModel, max_tokens: int
) -> None:
    tokenizer = sentiment.pipeline.tokenizer
    text = _varied_text(40_000)
    lead = leading_text(tokenizer, text, max_tokens)
    assert len(lead) < 20 * max_tokens * 8 and text.startswith(lead)

    def first_tokens(t: str) -> list[int]:
        ids: list[int] = tokenizer(t, truncation=True, max_length=max_tokens)["input_ids"]
        return ids

    assert first_tokens(lead) == first_tokens(text)


def test_leading_text_bounds_a_text_without_tokens_to_spare(sentiment: PipelineModel) -> None:
    # one huge word is one [UNK]: no cut holds more tokens than the limit, so the widening
    # stops after a few rounds instead of tokenising everything
    lead = leading_text(sentiment.pipeline.tokenizer, "z" * 5_000_000, 128)
    assert len(lead) == 128 * 8 * 4**3


def test_a_huge_text_scores_like_its_beginning(sentiment: PipelineModel) -> None:
    text = _varied_text(300_000)  # about 2.5 MB
    whole, start = sentiment.predict([_text(sentiment, text), _text(sentiment, text[:5000])])
    _assert_close_results([whole], [start])


def test_classification_rejects_top_k_zero(sentiment: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match="'top_k' must be greater than 0"):
        sentiment.predict([_text(sentiment, "hi", top_k=0)])


# -- zero-shot-classification ------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_shot(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("zero-shot-classification", tiny_checkpoints["tiny-bert-nli"])


def _labels(model: PipelineModel, text: str, labels: list[str], **overrides: Any) -> Request:
    return _request(model, {"text": text, "candidate_labels": labels}, **overrides)


def test_zero_shot_scores_sum_to_one(zero_shot: PipelineModel) -> None:
    labels = ["sports", "politics", "business"]
    [result] = zero_shot.predict([_labels(zero_shot, "The team won the championship", labels)])
    assert set(result) == {"label", "score", "labels", "scores"}
    assert sorted(result["labels"]) == sorted(labels)
    _assert_ranked(result)
    assert sum(result["scores"]) == pytest.approx(1.0)


def test_zero_shot_multi_label_scores_each_label_alone(zero_shot: PipelineModel) -> None:
    labels = ["sports", "politics", "business"]
    request = _labels(zero_shot, "The team won", labels, multi_label=True)
    [result] = zero_shot.predict([request])
    _assert_ranked(result)
    assert all(0.0 < s < 1.0 for s in result["scores"])
    assert sum(result["scores"]) != pytest.approx(1.0)


def test_zero_shot_batch_with_different_labels(zero_shot: PipelineModel) -> None:
    batch = [
        _labels(zero_shot, "The team won", ["sports", "politics"]),
        _labels(zero_shot, "Elections in the spring", ["politics", "weather", "food"]),
        _labels(zero_shot, "The cat sleeps", ["sports", "politics"]),
        _labels(zero_shot, "The cat sleeps", ["animals"], hypothesis_template="It is about {}."),
    ]
    results = zero_shot.predict(batch)
    for request, result in zip(batch, results, strict=True):
        assert sorted(result["labels"]) == sorted(request.inputs["candidate_labels"])
    _assert_close_results(results, _one_by_one(zero_shot, batch))


@pytest.mark.parametrize(
    ("labels", "overrides", "message"),
    [
        ([], {}, "'candidate_labels' must hold at least one label"),
        (["a", " "], {}, "must not hold empty labels"),
        (["a"], {"hypothesis_template": "This example is about"}, r"must contain \{\}"),
        (["a"], {"hypothesis_template": "{} and {0}"}, "no other braces"),
    ],
)
def test_zero_shot_bad_requests_say_what_was_expected(
    zero_shot: PipelineModel, labels: list[str], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        zero_shot.predict([_labels(zero_shot, "text", labels, **overrides)])


def test_a_bad_request_fails_before_any_model_work(
    zero_shot: PipelineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards: list[object] = []
    monkeypatch.setattr(zero_shot.pipeline, "forward", lambda *a, **k: forwards.append(a))
    with pytest.raises(InvalidArgument):  # alone: raised, as there is nothing to isolate
        zero_shot.predict([_labels(zero_shot, "bad", [])])
    # in a batch: each bad request's error in its own slot
    results: list[Any] = zero_shot.predict(
        [
            _labels(zero_shot, "bad", []),
            _labels(zero_shot, "worse", ["a"], hypothesis_template="no braces"),
        ]
    )
    assert [type(r) for r in results] == [InvalidArgument, InvalidArgument]
    assert forwards == []


# -- token-classification ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ner(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("ner", tiny_checkpoints["tiny-bert-ner"])


def test_entities_are_plain_maps(ner: PipelineModel) -> None:
    assert ner.task == "token-classification"
    text = "Alice moved from Paris to London"
    [result] = ner.predict([_text(ner, text)])
    assert set(result) == {"entities"}
    assert result["entities"], "the random model tags something"
    for entity in result["entities"]:
        assert set(entity) == {"entity", "score", "word", "start", "end"}
        assert entity["entity"] in {"PER", "LOC", "ORG"}
        assert type(entity["score"]) is float
        assert type(entity["start"]) is int and type(entity["end"]) is int
        assert text[entity["start"] : entity["end"]].lower() == entity["word"]


def test_entities_without_aggregation_carry_iob_labels(ner: PipelineModel) -> None:
    [result] = ner.predict([_text(ner, "Alice moved from Paris", aggregation_strategy="none")])
    labels = {"B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    assert result["entities"] and all(e["entity"] in labels for e in result["entities"])


def test_entities_batch_with_different_strategies(ner: PipelineModel) -> None:
    batch = [
        _text(ner, "Alice moved from Paris to London", aggregation_strategy="none"),
        _text(ner, "Bob works for Google in New York"),
        _text(ner, "Maria visited Geneva", aggregation_strategy="first"),
        _text(ner, "Apple announced a new phone", aggregation_strategy="max"),
        _text(ner, "The United Nations met", aggregation_strategy="average"),
    ]
    results = ner.predict(batch)
    assert len(results) == len(batch)
    for got, want in zip(results, _one_by_one(ner, batch), strict=True):
        assert [e["word"] for e in got["entities"]] == [e["word"] for e in want["entities"]]
        assert [e["score"] for e in got["entities"]] == pytest.approx(
            [e["score"] for e in want["entities"]], abs=1e-5
        )


def test_entities_reject_an_unknown_strategy(ner: PipelineModel) -> None:
    with pytest.raises(InvalidArgument, match="'aggregation_strategy' must be one of"):
        _text(ner, "Alice", aggregation_strategy="longest")


# -- fill-mask ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fill_mask(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load(None, tiny_checkpoints["tiny-bert-mlm"])


def test_fill_mask_ranks_candidates(fill_mask: PipelineModel) -> None:
    [result] = fill_mask.predict([_text(fill_mask, "The cat sleeps on the [MASK].")])
    assert set(result) == {"sequences", "tokens", "scores"}
    assert len(result["tokens"]) == len(result["sequences"]) == len(result["scores"]) == 5
    assert result["scores"] == sorted(result["scores"], reverse=True)
    assert all(type(s) is float for s in result["scores"])
    for token, sequence in zip(result["tokens"], result["sequences"], strict=True):
        # a word-piece candidate ("##s") joins the word before it
        assert "[MASK]" not in sequence and token.removeprefix("##") in sequence


def test_fill_mask_batch_with_different_top_k(fill_mask: PipelineModel) -> None:
    batch = [
        _text(fill_mask, "The cat sleeps on the [MASK].", top_k=1),
        _text(fill_mask, "Alice moved from [MASK] to London last year.", top_k=3),
        _text(fill_mask, "[MASK] is good."),
    ]
    results = fill_mask.predict(batch)
    assert [len(r["tokens"]) for r in results] == [1, 3, 5]
    _assert_close_results(results, _one_by_one(fill_mask, batch))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no mask here", r"input 'text' must contain the mask token \[MASK\]$"),
        ("[MASK] and [MASK]", r"exactly once, found 2"),
        ("the " * 200 + "[MASK]", "is 203 tokens; this model takes at most 128"),
    ],
)
def test_fill_mask_bad_text(fill_mask: PipelineModel, text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        fill_mask.predict([_text(fill_mask, text)])


def test_a_bad_request_in_a_batch_fails_alone_and_the_rest_share_one_call(
    fill_mask: PipelineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [_text(fill_mask, "The cat sleeps on the [MASK]."), _text(fill_mask, "[MASK] is good.")]
    want = _one_by_one(fill_mask, good)
    forward = fill_mask.pipeline.forward
    calls: list[int] = []

    def counted(model_inputs: Any, **kwargs: Any) -> Any:
        calls.append(len(model_inputs["input_ids"]))
        return forward(model_inputs, **kwargs)

    monkeypatch.setattr(fill_mask.pipeline, "forward", counted)
    results: list[Any] = fill_mask.predict([good[0], _text(fill_mask, "no mask here"), good[1]])
    assert calls == [2]  # the two good texts, in one forward pass
    assert isinstance(results[1], InvalidArgument)
    assert "must contain the mask token" in results[1].message
    _assert_close_results([results[0], results[2]], want)


# -- feature-extraction / sentence-embedding ---------------------------------------------


@pytest.fixture(scope="module")
def features(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    return _load("feature-extraction", tiny_checkpoints["tiny-bert-mlm"])


def test_token_features_cover_only_the_real_tokens(features: PipelineModel) -> None:
    [result] = features.predict([_text(features, "Alice moved to Paris")])
    tokens = features.pipeline.tokenizer("Alice moved to Paris")["input_ids"]
    embedding = result["embedding"]
    assert isinstance(embedding, np.ndarray) and embedding.dtype == np.float32
    assert embedding.shape == (len(tokens), 32)


def test_pooled_features(features: PipelineModel) -> None:
    text = "Alice moved to Paris"
    tokens, mean, cls, unit = (
        r["embedding"]
        for r in features.predict(
            [
                _text(features, text),
                _text(features, text, pooling="mean"),
                _text(features, text, pooling="cls"),
                _text(features, text, pooling="mean", normalize=True),
            ]
        )
    )
    assert mean.shape == cls.shape == unit.shape == (32,)
    np.testing.assert_allclose(mean, tokens.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(cls, tokens[0], atol=1e-6)
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(unit, mean / np.linalg.norm(mean), atol=1e-5)


def test_padding_does_not_leak_into_a_batch(features: PipelineModel) -> None:
    batch = [
        _text(features, "Hi", pooling="mean"),
        _text(features, "The quick brown fox jumps over the lazy dog", pooling="mean"),
        _text(features, "Hi there"),
        _text(features, "A doctor helps patients", pooling="cls", normalize=True),
    ]
    _assert_close_results(features.predict(batch), _one_by_one(features, batch))


def test_features_truncate_to_the_model_length(features: PipelineModel) -> None:
    [result] = features.predict([_text(features, "word " * 400)])
    assert result["embedding"].shape == (128, 32)


def test_sentence_embedding_defaults(tiny_checkpoints: dict[str, Path]) -> None:
    model = _load("sentence-embedding", tiny_checkpoints["tiny-bert-mlm"])
    assert model.default_parameters == {"pooling": "mean", "normalize": True}
    [result] = model.predict([_text(model, "Alice moved to Paris")])
    assert result["embedding"].shape == (32,)
    assert np.linalg.norm(result["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_minilm_sentence_embeddings_mean_something(minilm_path: Path) -> None:
    model = _load("sentence-embedding", minilm_path)
    guitar, instrument, stocks = (
        r["embedding"]
        for r in model.predict(
            [
                _text(model, "A man is playing a guitar."),
                _text(model, "Someone plays an instrument."),
                _text(model, "The stock market fell sharply today."),
            ]
        )
    )
    for vector in (guitar, instrument, stocks):
        assert vector.shape == (384,) and vector.dtype == np.float32
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    related, unrelated = float(guitar @ instrument), float(guitar @ stocks)
    assert related > unrelated + 0.2, (related, unrelated)
    assert not math.isnan(related)


# -- loading and the base behaviour -------------------------------------------------------


def test_a_task_that_does_not_stream_answers_once(sentiment: PipelineModel) -> None:
    assert sentiment.streaming is False
    request = _text(sentiment, "I loved this movie")
    stream = sentiment.predict_stream(request, threading.Event())
    with pytest.raises(StopIteration) as done:
        next(stream)
    assert done.value.value == sentiment.predict([request])[0]


def test_load_options(tiny_checkpoints: dict[str, Path]) -> None:
    path = str(tiny_checkpoints["tiny-bert-sentiment"])
    model = PipelineModel(None)
    model.load(LoadContext(source=path, device="cpu", options={"dtype": "bfloat16"}))
    assert str(model.pipeline.model.dtype) == "torch.bfloat16"
    _assert_ranked(model.predict([_text(model, "good")])[0])
    with pytest.raises(InvalidArgument, match="option 'dtype' must be one of"):
        PipelineModel(None).load(LoadContext(path, "cpu", {"dtype": "float8"}))
    with pytest.raises(InvalidArgument, match="option 'model_kwargs' must be a map"):
        PipelineModel(None).load(LoadContext(path, "cpu", {"model_kwargs": "x"}))


def test_a_tokenizer_saved_without_a_length_limit_still_truncates(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ner"
    shutil.copytree(tiny_checkpoints["tiny-bert-ner"], checkpoint)
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    del config["model_max_length"]  # as many hub tokenizers are saved
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))
    model = _load("ner", checkpoint)
    [result] = model.predict([_text(model, "Alice moved to Paris. " * 100)])
    assert all(e["end"] <= 600 for e in result["entities"])  # the first 128 tokens only
