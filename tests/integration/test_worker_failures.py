"""A worker says what went wrong with its models: one line per failed model, no traceback
(unless --verbose), and it never reports ready with nothing to serve.

The real `modelyard worker` process, as a user runs it. There is no network here, so the
Hugging Face hub is unreachable for real; HF_HUB_OFFLINE is unset in the worker's
environment and its cache is empty, as on a fresh machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import write_config
from workers.metrics import WorkerMetrics
from workers.registry import ModelRegistry, ModelState
from workers.server import StartupError, Worker
from workers.settings import ModelConfig, WorkerSettings

MODELYARD = str(Path(sys.executable).parent / "modelyard")
REPO = Path(__file__).resolve().parents[2]
LOGGED_AT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
#: The old behaviour took about 50 s (huggingface_hub's retries); this cannot flake.
HUB_FAILS_WITHIN = 20.0


def run_worker(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`modelyard worker --config CONFIG` to its end, online as far as it knows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {
        "HF_HOME": str(config.parent / "hf-home"),  # an empty cache
        "PYTHONPATH": str(REPO),  # tests.support.models
        "COLUMNS": "250",
    }
    return subprocess.run(
        [MODELYARD, "worker", "--config", str(config), "--port", "0", *options],
        capture_output=True, text=True, timeout=120, env=env, cwd=config.parent,
    )  # fmt: skip


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def assert_no_traceback_and_never_ready(output: str) -> None:
    assert "Traceback" not in output
    assert not lines_with(output, " ready on ")


def test_missing_folders_say_so_and_a_worker_with_nothing_to_serve_exits_2(
    tmp_path: Path,
) -> None:
    models = [
        {"name": "a", "source": "./no/such/folder"},
        {"name": "b", "source": "my model"},  # no hub id has a space
    ]
    done = run_worker(write_config(tmp_path / "worker.yaml", models))
    assert done.returncode == 2, done.stderr
    missing = tmp_path / "no" / "such" / "folder"
    assert lines_with(done.stderr, "model a failed to load")[0].endswith(
        f"model a failed to load: no such folder: {missing}"
    )
    assert lines_with(done.stderr, "model b failed to load")[0].endswith(
        f"model b failed to load: no such folder: my model (relative to {tmp_path})"
    )
    [refusal] = lines_with(done.stderr, "worker could not start")
    assert "nothing to serve: 2 of 2 model(s) failed to load" in refusal
    assert "Repo id" not in done.stderr
    assert_no_traceback_and_never_ready(done.stderr)


def test_an_unreachable_hub_fails_within_seconds_saying_what_to_do(tmp_path: Path) -> None:
    models = [{"name": "remote", "source": "someone/some-model"}]
    done = run_worker(write_config(tmp_path / "worker.yaml", models))
    assert done.returncode == 1, done.stderr  # not the config's mistake: exit 1, not 2
    [listening] = lines_with(done.stderr, "loading 1 model(s)")
    [failed] = lines_with(done.stderr, "model remote failed to load: ")
    assert "the Hugging Face hub is unreachable (https://huggingface.co: " in failed
    assert "'someone/some-model' is neither a folder here nor in the local cache" in failed
    assert "use a local folder as its source, or pre-fill the cache" in failed
    assert "set HF_HUB_OFFLINE=1" in failed
    assert (logged_at(failed) - logged_at(listening)).total_seconds() < HUB_FAILS_WITHIN
    assert not lines_with(done.stderr, "Retrying in")
    assert_no_traceback_and_never_ready(done.stderr)


def test_strict_mode_prints_one_line_per_failed_model_and_exits_2(tmp_path: Path) -> None:
    models = [
        {"name": "a", "source": "./no/such/folder"},
        {"name": "broken", "class": "tests.support.models:BrokenLoad"},
        {"name": "echo", "class": "tests.support.models:Echo"},
    ]
    done = run_worker(write_config(tmp_path / "worker.yaml", models, strict=True))
    assert done.returncode == 2, done.stderr  # a missing folder is the config's to fix
    [a] = lines_with(done.stderr, "model a failed to load: ")
    assert a.endswith(f"no such folder: {tmp_path / 'no' / 'such' / 'folder'}")
    [broken] = lines_with(done.stderr, "model broken failed to load: ")
    assert broken.endswith("FileNotFoundError: weights.bin not found (a stand-in for a broken "
                           "checkpoint)")  # fmt: skip
    assert lines_with(done.stderr, "model echo ready")
    [refusal] = lines_with(done.stderr, "worker could not start")
    assert "strict mode: 2 of 3 model(s) failed to load" in refusal
    assert_no_traceback_and_never_ready(done.stderr)


def test_verbose_shows_the_traceback_of_a_failed_load(tmp_path: Path) -> None:
    models = [{"name": "broken", "class": "tests.support.models:BrokenLoad"}]
    done = run_worker(write_config(tmp_path / "worker.yaml", models), "--verbose")
    assert done.returncode == 1, done.stderr  # the model's own failure: exit 1
    assert "Traceback" in done.stderr and "weights.bin not found" in done.stderr


@pytest.mark.parametrize("config", ["port: 0\n", "models: []\n", None])
def test_a_worker_without_models_refuses_to_start(tmp_path: Path, config: str | None) -> None:
    path = tmp_path / "worker.yaml"
    if config is not None:
        path.write_text(config)
    command = [MODELYARD, "worker", *(["--config", str(path)] if config is not None else [])]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"}
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: invalid worker config: no models to serve: ")
    assert "Traceback" not in done.stderr and "listening" not in done.stderr


@pytest.mark.parametrize(
    ("models", "exit_code"),
    [
        ([{"name": "broken", "class": "tests.support.models:BrokenLoad"}], 1),
        (
            [
                {"name": "broken", "class": "tests.support.models:BrokenLoad"},
                {"name": "ghost", "class": "no_such_package.models:Ghost"},
            ],
            2,  # one of them is the config's mistake: that is what to fix first
        ),
    ],
)
async def test_a_worker_whose_every_model_failed_stays_not_serving_and_refuses(
    models: list[dict[str, Any]], exit_code: int
) -> None:
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=models))
    try:
        with pytest.raises(StartupError, match=r"^nothing to serve: ") as caught:
            await worker.start()
        assert caught.value.exit_code == exit_code
        async with grpc.aio.insecure_channel(worker.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "modelyard.v1.Predict", "broken"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING, service
    finally:
        await worker.abort()


async def test_a_model_thread_starting_while_torch_is_half_imported_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a model thread sees while another model's thread is importing torch: the module
    # is in sys.modules, its attributes not yet. This used to fail the model with
    # "BrokenThreadPool: A thread initializer failed".
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    # on "cpu": resolving "auto" imports torch, which waits for a real import to finish
    echo = ModelConfig.model_validate(
        {"name": "echo", "class": "tests.support.models:Echo", "device": "cpu"}
    )
    registry = ModelRegistry([echo], WorkerMetrics())
    try:
        await registry.load_all()
        [entry] = registry.entries()
        assert entry.state is ModelState.READY, entry.reason
    finally:
        await registry.close()


def logged_at(line: str) -> datetime:
    match = LOGGED_AT.match(line)
    assert match is not None, f"no timestamp in {line!r}"
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f")
