"""What a real `modelyard worker` process imports: only what its models' tasks need.

torch and transformers cost a worker seconds of start-up and about 300 MB; a worker that
serves only plain-Python models must not import them. cryptography (8 MB) makes the
throwaway CA of `modelyard up --tls`, which no worker needs, nor the CLI's other commands.
A model served next to the others reports its own process's `sys.modules`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelyard.client import Client
from tests.integration.conftest import worker_process, write_config

HEAVY = ["torch", "transformers"]
# the CLI's other commands (their imports: numpy, the stack's etcd client) and rich, which
# only a command that prints a table needs
OTHER_COMMANDS = [
    f"modelyard_cli.{m}" for m in ("controlplane", "cluster", "graph", "status", "up")
]
UNNEEDED = ["cryptography", "rich", *OTHER_COMMANDS]
REPORTER = {"name": "imported", "class": "tests.support.models:ImportedModules"}


def imported_by_worker(config: Path) -> list[Any]:
    with worker_process(config) as (_, address), Client(address, timeout=30) as client:
        client.predict("echo", text="hello")  # a served call, not just a loaded model
        return list(client.predict("imported", names=HEAVY + UNNEEDED).outputs["imported"])


def test_a_worker_serving_plain_python_models_imports_neither_torch_nor_transformers(
    tmp_path: Path,
) -> None:
    echo = {"name": "echo", "class": "tests.support.models:Echo"}
    config = write_config(tmp_path / "worker.yaml", [echo, REPORTER])
    assert imported_by_worker(config) == []


def test_a_worker_serving_a_transformers_model_imports_them_and_nothing_unneeded(
    tmp_path: Path, tiny_checkpoints: dict[str, Path]
) -> None:
    # The same probe sees them once a model's task needs them.
    sentiment = {"name": "echo", "source": str(tiny_checkpoints["tiny-bert-sentiment"])}
    config = write_config(tmp_path / "worker.yaml", [sentiment, REPORTER])
    assert imported_by_worker(config) == HEAVY


ASK_THE_HUB = f"""
import sys
from modelyard.errors import Unavailable
from workers.loader import create_model
from workers.settings import ModelConfig
try:
    create_model(ModelConfig(name="remote", source="someone/some-model"))
except Unavailable:
    print([name for name in {HEAVY!r} if name in sys.modules])
else:
    sys.exit("creating the model asked the hub nothing")
"""


def test_a_hub_id_is_asked_about_before_torch_and_transformers_are_imported(
    tmp_path: Path,
) -> None:
    # An unreachable hub is reported without first paying seconds for the import.
    with socket.socket() as closed:  # a loopback port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", ASK_THE_HUB],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr
