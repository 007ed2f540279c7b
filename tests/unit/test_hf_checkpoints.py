"""The tiny offline checkpoints: real Hugging Face format, deterministic, built once."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from tools.tiny_models import (
    CHECKPOINT_NAMES,
    MARKER,
    build_checkpoint,
    build_tiny_checkpoints,
    main,
)


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_every_checkpoint_is_in_hugging_face_format(tiny_checkpoints: dict[str, Path]) -> None:
    assert (
        set(tiny_checkpoints)
        == set(CHECKPOINT_NAMES)
        == {
            "tiny-gpt2",
            "tiny-distilgpt2",
            "tiny-bert-sentiment",
            "tiny-bert-nli",
            "tiny-bert-ner",
            "tiny-bert-mlm",
            "tiny-gpt2-chat",
        }
    )
    for path in tiny_checkpoints.values():
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= names


def test_only_the_chat_checkpoint_has_a_chat_template(tiny_checkpoints: dict[str, Path]) -> None:
    with_template = {
        n for n, p in tiny_checkpoints.items() if (p / "chat_template.jinja").is_file()
    }
    assert with_template == {"tiny-gpt2-chat"}


def test_labels_are_the_ones_pipelines_look_for(tiny_checkpoints: dict[str, Path]) -> None:
    def labels(name: str) -> list[str]:
        config = json.loads((tiny_checkpoints[name] / "config.json").read_text())
        return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]

    assert labels("tiny-bert-sentiment") == ["NEGATIVE", "POSITIVE"]
    assert labels("tiny-bert-nli") == ["contradiction", "neutral", "entailment"]
    assert labels("tiny-bert-ner") == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def test_builds_are_deterministic(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    again = build_tiny_checkpoints(tmp_path)
    for name, path in again.items():
        assert _digest(path) == _digest(tiny_checkpoints[name]), name


def test_a_complete_checkpoint_is_not_rebuilt(tmp_path: Path) -> None:
    first = build_checkpoint(tmp_path, "tiny-bert-mlm")
    weights = first / "model.safetensors"
    weights.write_bytes(b"sentinel")  # a rebuild would overwrite this
    assert build_checkpoint(tmp_path, "tiny-bert-mlm") == first
    assert weights.read_bytes() == b"sentinel"


def test_a_checkpoint_from_an_older_builder_is_rebuilt(tmp_path: Path) -> None:
    path = build_checkpoint(tmp_path, "tiny-bert-mlm")
    fresh = _digest(path)
    (path / "model.safetensors").write_bytes(b"old weights")
    (path / MARKER).write_text("an older fingerprint\n")
    assert build_checkpoint(tmp_path, "tiny-bert-mlm") == path
    assert _digest(path) == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-bert-mlm"]  # nothing left aside


def test_an_incomplete_directory_is_replaced(tmp_path: Path) -> None:
    half = tmp_path / "tiny-gpt2"
    half.mkdir()
    (half / "config.json").write_text("{}")  # an aborted build from some other tool
    path = build_checkpoint(tmp_path, "tiny-gpt2")
    assert (path / MARKER).exists()
    assert json.loads((path / "config.json").read_text())["model_type"] == "gpt2"


def test_concurrent_builders_leave_one_complete_copy(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_tiny_checkpoints(tmp_path)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # no staging directories left behind, and every checkpoint identical to a lone build
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CHECKPOINT_NAMES)
    alone = build_tiny_checkpoints(tmp_path / "alone")
    for name in CHECKPOINT_NAMES:
        assert _digest(tmp_path / name) == _digest(alone[name])


def test_unknown_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny-gpt2"):
        build_checkpoint(tmp_path, "tiny-llama")


def test_main_prints_each_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(CHECKPOINT_NAMES)
    assert all(Path(line.split("\t")[1]).is_dir() for line in lines)


def test_tiny_gpt2_works_with_a_plain_batched_pipeline(tiny_checkpoints: dict[str, Path]) -> None:
    from transformers import pipeline

    generator = pipeline("text-generation", model=str(tiny_checkpoints["tiny-gpt2"]), device="cpu")
    results = generator(["Alice lives in", "Hi"], batch_size=2, max_new_tokens=3)
    assert [r[0]["generated_text"][:2] for r in results] == ["Al", "Hi"]
