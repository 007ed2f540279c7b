"""Fixtures that run real worker servers on 127.0.0.1 with port 0."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard_cli.demo import start_worker
from workers.server import Worker
from workers.settings import WorkerSettings


@contextlib.asynccontextmanager
async def running_worker(models: list[dict[str, Any]], **settings: Any) -> AsyncIterator[Worker]:
    """A worker serving `models` in this event loop, stopped gracefully afterwards."""
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=models, **settings))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@contextlib.contextmanager
def worker_process(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real `modelyard worker` process on a free port; killed if a test left it running."""
    process, address = start_worker(config, timeout=120)
    try:
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def write_config(path: Path, models: list[dict[str, Any]], **settings: Any) -> Path:
    path.write_text(yaml.safe_dump({"models": models, **settings}))
    return path


@pytest.fixture(scope="session")
def hf_worker_config(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, Path], minilm_path: Path
) -> Path:
    """Six transformers models and a custom one, as a user would configure them."""
    batching = {"max_batch_size": 8, "max_wait_ms": 2}
    models: list[dict[str, Any]] = [
        {"name": "embed", "source": str(minilm_path), "task": "sentence-embedding"},
        {
            "name": "sentiment",
            "source": str(tiny_checkpoints["tiny-bert-sentiment"]),
            "batching": batching,
        },
        {
            "name": "zero-shot",
            "source": str(tiny_checkpoints["tiny-bert-nli"]),
            "task": "zero-shot-classification",
        },
        {
            "name": "generate",
            "source": str(tiny_checkpoints["tiny-gpt2"]),
            "task": "text-generation",
            "parameters": {"max_new_tokens": 8},
            "batching": batching,
        },
        {"name": "ner", "source": str(tiny_checkpoints["tiny-bert-ner"])},
        {"name": "fill-mask", "source": str(tiny_checkpoints["tiny-bert-mlm"])},
        {"name": "echo", "class": "tests.support.models:Echo"},
    ]
    path = tmp_path_factory.mktemp("hf-worker") / "worker.yaml"
    return write_config(path, models, tags={"zone": "ci"})


@pytest.fixture(scope="session")
def hf_worker(hf_worker_config: Path) -> Iterator[str]:
    """The address of one real worker process serving `hf_worker_config`."""
    with worker_process(hf_worker_config) as (_, address):
        yield address
