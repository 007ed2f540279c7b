"""Model versions: configured, the model's own, a checkpoint digest, or a hub commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from modelyard.model import Model
from workers.loader import model_version
from workers.settings import ModelConfig

MAIN = "0123456789abcdef0123456789abcdef01234567"
TAGGED = "fedcba9876543210fedcba9876543210fedcba98"
PINNED = "1111111111aaaaaaaaaa2222222222bbbbbbbbbb"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache as hf_hub_download lays it out, holding org/tiny at three
    commits: "main" and tag "v1" name two of them, the third was fetched by its hash."""
    repo = tmp_path / "models--org--tiny"
    for ref, commit in (("main", MAIN), ("v1", TAGGED)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    for commit in (MAIN, TAGGED, PINNED):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    # the library read HF_HUB_CACHE from the environment once, at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def version(source: str, **options: Any) -> str:
    return model_version(ModelConfig(name="m", source=source, options=options), Model())


def test_a_hub_model_is_versioned_by_its_cached_commit(hub_cache: Path) -> None:
    assert version("org/tiny") == MAIN[:12]
    assert version("org/tiny", revision="main") == MAIN[:12]
    assert version("org/tiny", revision="v1") == TAGGED[:12]
    assert version("org/tiny", revision=PINNED) == PINNED[:12]  # a hash names itself


def test_a_hub_model_not_in_the_cache_falls_back_to_its_revision(hub_cache: Path) -> None:
    assert version("org/elsewhere") == "main"
    assert version("org/tiny", revision="dev") == "dev"


def test_a_configured_version_wins(hub_cache: Path) -> None:
    config = ModelConfig(name="m", source="org/tiny", version="2024-06")
    assert model_version(config, Model()) == "2024-06"


def test_a_local_checkpoint_is_versioned_by_a_digest_of_its_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1}')
    first = version(str(tmp_path))
    assert len(first) == 12 and first == version(str(tmp_path))
    (tmp_path / "config.json").write_text('{"a": 2}')
    assert version(str(tmp_path)) != first
