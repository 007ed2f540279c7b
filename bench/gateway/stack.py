"""The processes the gateway bench measures: etcd, a control plane, one worker serving the
chat model, and `modelyard gateway` in front of them (no composer: no graphs are called)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.errors import BenchError
from bench.common.paths import REPO
from bench.common.servers import Server, Service, controlplane, serving, worker, write_worker_config
from modelyard_cli.etcd_server import EtcdServer

MODEL = "chat"
LISTED_WITHIN_S = 60.0


@dataclass(frozen=True)
class GatewayStack:
    worker: Server
    gateway: Server

    @property
    def chat_url(self) -> str:
        return f"http://{self.gateway.address}/v1/chat/completions"


def chat_model(checkpoint: Path | None) -> dict[str, Any]:
    """The served chat model: the checkpoint as llm/v1/chat, or (no checkpoint: a smoke
    run) the stand-in."""
    if checkpoint is None:
        return {"name": MODEL, "class": "bench.gateway.standins:StandInChat"}
    return {"name": MODEL, "source": str(checkpoint), "task": "llm/v1/chat"}


@contextlib.contextmanager
def gateway_stack(workdir: Path, model: dict[str, Any]) -> Iterator[GatewayStack]:
    with EtcdServer() as etcd, contextlib.ExitStack() as stack:
        plane = stack.enter_context(serving("controlplane", controlplane(etcd.endpoint), workdir))
        config = write_worker_config(
            workdir / "worker.yaml", [model], etcd={"endpoints": [etcd.endpoint]}, worker_id="llm"
        )
        served = stack.enter_context(serving("worker", worker(config), workdir))
        command = Service(("gateway", "--controlplane", plane.address, "--composer", ""))
        gateway = stack.enter_context(serving("gateway", command, workdir))
        _wait_listed(gateway.address, MODEL)
        yield GatewayStack(served, gateway)  # stopped in reverse: the gateway first


def _wait_listed(address: str, model: str) -> None:
    """Until the gateway's /v1/models lists `model` (the worker has registered)."""
    deadline = time.monotonic() + LISTED_WITHIN_S
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(f"http://{address}/v1/models", timeout=5) as reply,
        ):
            if model in {m["id"] for m in json.loads(reply.read())["data"]}:
                return
        time.sleep(0.1)
    raise BenchError(f"the gateway at {address} did not list {model!r} within {LISTED_WITHIN_S} s")


def build_checkpoint(workdir: Path) -> Path:
    """tiny-gpt2-chat, built in a child process (this one never imports torch)."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.tiny_models", str(workdir / "checkpoints")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    paths = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
    return Path(paths["tiny-gpt2-chat"])
