"""Every service refuses bad settings the same way: a message saying what is wrong, exit 2,
no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MODELYARD = str(Path(sys.executable).parent / "modelyard")


@pytest.mark.parametrize("service", ["worker", "controlplane", "composer"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port: [", "while parsing"),  # broken YAML
        ("- a list\n", "expected a mapping at the top level"),
        ("colour: red\n", "colour"),  # an unknown setting
        ("port: -5\n", "port"),
        (None, "No such file"),
    ],
)
def test_bad_settings_exit_2_with_a_message(
    tmp_path: Path, service: str, content: str | None, message: str
) -> None:
    path = tmp_path / "settings.yaml"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [MODELYARD, service, "--config", str(path)],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_balancing_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "composer.yaml"
    path.write_text("policy: fastest\n")
    done = subprocess.run(
        [MODELYARD, "composer", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "p2c" in done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: g\nnodes:\n  - {name: a, modle: gpt2}\n", "unknown key 'modle'"),
        ("name: [", "cannot load"),
    ],
)
def test_graph_deploy_refuses_a_bad_file_before_calling_anyone(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(content)
    done = subprocess.run(
        [MODELYARD, "graph", "deploy", str(path), "--composer", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_run_refuses_an_input_that_is_not_name_equals_value() -> None:
    done = subprocess.run(
        [MODELYARD, "run", "g", "-i", "prompt", "--composer", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 2
    assert "expected name=value, got 'prompt'" in done.stderr
