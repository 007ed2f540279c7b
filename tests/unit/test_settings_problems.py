"""How a settings or YAML mistake is worded: the file and line, the field path, a
did-you-mean for a misspelt key, the value given, and no pydantic links."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from composer.settings import ComposerSettings
from modelyard_server.settings_file import FileProblem, read_yaml, settings_problem
from workers.settings import WorkerSettings, load_settings


def problem_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as caught:
        load_settings(path)
    return settings_problem(caught.value, WorkerSettings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lease_tl: 3\n", "lease_tl: unknown setting (did you mean 'lease_ttl'?)"),
        (
            "models:\n  - {name: a, source: x, batchng: {}}\n",
            "models[0].batchng: unknown setting (did you mean 'batching'?)",
        ),
        (
            "models:\n  - {name: a, source: x, batching: {max_batch_siz: 2}}\n",
            "models[0].batching.max_batch_siz: unknown setting (did you mean 'max_batch_size'?)",
        ),
        ("etcd: {endpoint: [x]}\n", "etcd.endpoint: unknown setting (did you mean 'endpoints'?)"),
        (
            "models:\n  - {name: a, clas: 'm:C'}\n",  # the file spells `class_path` as `class`
            "models[0].clas: unknown setting (did you mean 'class'?)",
        ),
        ("port: -5\n", "port: Input should be greater than or equal to 0, got -5"),
        (
            "models:\n  - {name: a}\n",
            "models[0]: model 'a': set exactly one of 'source' (a Hugging Face id or local path) "
            "or 'class' (a Python class path)",
        ),
    ],
)
def test_a_settings_mistake_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    assert problem_of(tmp_path, text) == expected


def test_a_key_with_no_near_miss_lists_the_keys_there() -> None:
    with pytest.raises(ValidationError) as caught:
        ComposerSettings(colour="red")  # type: ignore[call-arg]
    message = settings_problem(caught.value, ComposerSettings)
    assert message.startswith("colour: unknown setting (expected one of: host, port, ")
    assert "pydantic" not in message


def test_several_mistakes_are_one_line(tmp_path: Path) -> None:
    message = problem_of(tmp_path, "port: -1\nlease_ttl: 0\n")
    assert message.count("; ") == 1 and "\n" not in message


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text("workers:\n  - worker_id: a\n    models: [\n")
    with pytest.raises(FileProblem) as caught:
        read_yaml(path)
    assert str(caught.value) == (
        f"{path}, line 4: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileProblem, match=r"nope\.yaml: No such file or directory$"):
        read_yaml(tmp_path / "nope.yaml")
