"""Which task a checkpoint is served with: inferred from config.json, or checked against it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext
from workers.hf import PipelineModel
from workers.hf.task_inference import SUPPORTED_TASKS, canonical_task, check_task, infer_task
from workers.hf.tasks import ADAPTERS


def _config(*architectures: str, labels: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(architectures=list(architectures), id2label=dict(enumerate(labels)))


def _load(task: str | None, path: Path) -> PipelineModel:
    model = PipelineModel(task)
    model.load(LoadContext(source=str(path), device="cpu"))
    return model


def test_every_supported_task_has_an_adapter() -> None:
    assert set(ADAPTERS) == set(SUPPORTED_TASKS)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("tiny-gpt2", "text-generation"),
        ("tiny-distilgpt2", "text-generation"),
        ("tiny-bert-sentiment", "text-classification"),
        ("tiny-bert-ner", "token-classification"),
        ("tiny-bert-mlm", "fill-mask"),
    ],
)
def test_task_is_inferred_from_the_checkpoint(
    tiny_checkpoints: dict[str, Path], name: str, task: str
) -> None:
    assert _load(None, tiny_checkpoints[name]).task == task


def test_a_bare_encoder_serves_feature_extraction() -> None:
    assert infer_task(_config("BertModel")) == "feature-extraction"


def test_a_sentence_transformers_directory_serves_feature_extraction(minilm_path: Path) -> None:
    model = _load(None, minilm_path)
    assert model.task == "feature-extraction"
    assert model.default_parameters == {"pooling": "none", "normalize": False}


def test_an_nli_classifier_without_a_task_is_ambiguous(tiny_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument, match="ambiguous") as caught:
        _load(None, tiny_checkpoints["tiny-bert-nli"])
    message = caught.value.message
    assert "zero-shot-classification" in message and "text-classification" in message
    assert "entailment" in message  # says why: the labels


def test_an_unknown_architecture_asks_for_a_task() -> None:
    with pytest.raises(InvalidArgument, match="cannot infer the task") as caught:
        infer_task(_config("T5ForConditionalGeneration"), "t5-small")
    assert "t5-small" in caught.value.message
    assert all(task in caught.value.message for task in SUPPORTED_TASKS)


def test_a_config_without_architectures_asks_for_a_task() -> None:
    with pytest.raises(InvalidArgument, match="no architecture"):
        infer_task(_config())


def test_a_task_that_does_not_fit_is_refused_before_loading_weights(
    tiny_checkpoints: dict[str, Path],
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _load("text-generation", tiny_checkpoints["tiny-bert-sentiment"])
    message = caught.value.message
    assert "text-generation" in message
    assert "causal language model" in message
    assert "BertForSequenceClassification" in message
    assert "tasks it fits: text-classification" in message


def test_zero_shot_needs_an_entailment_label() -> None:
    sentiment = _config("BertForSequenceClassification", labels=("NEGATIVE", "POSITIVE"))
    with pytest.raises(InvalidArgument, match="entailment"):
        check_task("zero-shot-classification", sentiment)
    nli = _config("BertForSequenceClassification", labels=("contradiction", "entailment"))
    assert check_task("zero-shot-classification", nli) == "zero-shot-classification"


def test_an_nli_checkpoint_serves_either_classification_task(
    tiny_checkpoints: dict[str, Path],
) -> None:
    nli = tiny_checkpoints["tiny-bert-nli"]
    assert _load("zero-shot-classification", nli).task == "zero-shot-classification"
    assert _load("text-classification", nli).task == "text-classification"


@pytest.mark.parametrize(
    ("alias", "task"),
    [
        ("sentiment-analysis", "text-classification"),
        ("ner", "token-classification"),
        ("sentence-embedding", "sentence-embedding"),
    ],
)
def test_aliases(alias: str, task: str) -> None:
    assert canonical_task(alias) == task
    assert PipelineModel(alias).task == task  # the signature is known before loading


def test_feature_extraction_fits_any_architecture() -> None:
    assert check_task("feature-extraction", _config("GPT2LMHeadModel")) == "feature-extraction"
    assert check_task("sentence-embedding", _config("BertForMaskedLM")) == "sentence-embedding"


def test_an_unsupported_task_lists_the_supported_ones() -> None:
    with pytest.raises(InvalidArgument, match="unsupported task 'summarization'") as caught:
        PipelineModel("summarization")
    assert "text-generation" in caught.value.message and "ner" in caught.value.message


def test_a_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read a model config"):
        _load("fill-mask", tmp_path / "nowhere")
