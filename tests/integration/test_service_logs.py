"""A service's logs as its settings say: `logging: {format: json}` in a worker's config, or
the environment's MODELYARD_<SERVICE>_LOGGING__FORMAT, makes every line a JSON event; text
stays the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelyard_cli.demo import REPO
from modelyard_cli.processes import import_path_env, start_service, stop_service

pytestmark = pytest.mark.slow  # real worker processes
MODELS = [{"name": "echo", "class": "tests.support.models:Echo"}]


def worker_log(folder: Path, config: dict[str, object], env: dict[str, str]) -> list[str]:
    """The lines a standalone worker logged from its start to its graceful stop."""
    folder.mkdir()
    path = folder / "worker.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS, **config}))
    log = folder / "worker.log"
    process, _ = start_service(
        ["worker", "--config", str(path)],
        timeout=60,
        env={**import_path_env(REPO), **env},
        log_file=log,
    )
    assert stop_service(process) == 0
    return log.read_text().splitlines()


def test_a_worker_configured_for_json_logs_one_json_event_per_line(tmp_path: Path) -> None:
    lines = worker_log(tmp_path / "json", {"logging": {"format": "json"}}, {})
    events = [json.loads(line) for line in lines]  # every line, or this raises
    assert any(e["message"].startswith("worker listening on") for e in events)
    assert {"time", "level", "logger", "message"} <= set(events[0])
    assert all(e["level"] in ("DEBUG", "INFO", "WARNING", "ERROR") for e in events)


def test_the_environment_can_ask_for_json_and_text_is_the_default(tmp_path: Path) -> None:
    json_lines = worker_log(tmp_path / "json", {}, {"MODELYARD_WORKER_LOGGING__FORMAT": "json"})
    assert all(json.loads(line)["message"] for line in json_lines)
    text_lines = worker_log(tmp_path / "text", {}, {})
    assert any(" INFO workers.server: worker listening on " in line for line in text_lines)
    assert not any(line.startswith("{") for line in text_lines)
