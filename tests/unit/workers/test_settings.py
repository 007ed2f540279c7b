"""Worker settings: YAML, environment, and the mistakes a user makes writing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    return path


def test_yaml_models_with_batching_and_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """
models:
  - name: gen
    source: ./models/tiny-gpt2
    task: text-generation
    batching: {max_batch_size: 8, max_wait_ms: 3}
    parameters: {max_new_tokens: 5}
  - {name: echo, class: "tests.support.models:Echo"}
tags: {zone: eu-1}
""",
        )
    )
    gen, echo = settings.models
    assert gen.source == str(tmp_path / "models" / "tiny-gpt2")  # relative to the config
    assert gen.batching.max_batch_size == 8
    assert gen.parameters == {"max_new_tokens": 5}
    assert echo.class_path == "tests.support.models:Echo"
    assert settings.tags == {"zone": "eu-1"}


def test_hub_ids_stay_ids_and_env_vars_expand(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODELS", "/srv/models")
    settings = load_settings(
        write(
            tmp_path,
            "models:\n  - {name: a, source: org/model}\n  - {name: b, source: $MODELS/b}\n",
        )
    )
    assert [m.source for m in settings.models] == ["org/model", "/srv/models/b"]


def test_environment_sets_worker_settings_and_the_command_line_wins(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MODELYARD_WORKER_PORT", "6000")
    monkeypatch.setenv("MODELYARD_WORKER_GRACE_SECONDS", "3")
    assert load_settings(None).port == 6000
    assert load_settings(None, {"port": 7000}).port == 7000
    assert load_settings(None).grace_seconds == 3


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("models:\n  - {name: a}\n", "set exactly one of 'source'"),
        ("models:\n  - {name: a, source: x, class: 'm:C'}\n", "set exactly one of 'source'"),
        ("models:\n  - {name: a, source: x}\n  - {name: a, source: y}\n", "appears twice"),
        ("models:\n  - {name: a, source: x, device: gpu}\n", "device must be auto, cpu"),
        ("models:\n  - {name: a, source: x, batching: {max_batch_size: 0}}\n", "greater than"),
        ("models:\n  - {name: a, source: x, colour: red}\n", "colour"),
        ("models:\n  - {name: 'a b', source: x}\n", "pattern"),
    ],
)
def test_config_mistakes_are_refused_with_a_reason(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(write(tmp_path, yaml_text))


def test_command_line_etcd_endpoints_keep_the_files_other_etcd_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "etcd: {endpoints: ['10.0.0.1:2379'], prefix: /prod}\nmodels: []\n")
    settings = load_settings(path, etcd_endpoints=["127.0.0.1:2379", "127.0.0.2:2379"])
    assert settings.etcd is not None
    assert settings.etcd.endpoints == ["127.0.0.1:2379", "127.0.0.2:2379"]
    assert settings.etcd.prefix == "/prod"
