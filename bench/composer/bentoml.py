"""The BentoML baseline: its own venv, `.cache/bentoml-venv` (created on first use, so the
project's venv is never touched), and `bentoml serve` of bench/composer/bentoml_service."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common.errors import BenchError, log_tail
from bench.common.paths import REPO
from bench.composer.stacks import FAIR_ENV
from modelyard_cli.etcd_server import free_port

VENV = REPO / ".cache" / "bentoml-venv"
VERSION = "1.4.39"  # 1.4.40 does not resolve here (shared/ENVIRONMENT.md)
# torch first and pinned in both commands: anything unpinned pulls a multi-GB CUDA build
INSTALL = (
    ["torch==2.13.0"],
    [
        "torch==2.13.0",
        f"bentoml=={VERSION}",
        "transformers==5.23.*",
        "tokenizers>=0.23,<0.24",
        "psutil",
    ],
)
SERVICE = Path(__file__).resolve().parent / "bentoml_service"
INSTALL_TIMEOUT_S = 900.0
START_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 20.0


def bentoml_bin() -> Path:
    return VENV / "bin" / "bentoml"


def installed_version() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists() or not bentoml_bin().exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('bentoml'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_venv(log: Path) -> str:
    """The BentoML venv, created on first use (about 1.5 min); returns bentoml's version."""
    if (version := installed_version()) == VERSION:
        return version
    started = time.monotonic()
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)]]
    steps += [pip + list(packages) for packages in INSTALL]
    with log.open("ab") as sink:
        for step in steps:
            left = INSTALL_TIMEOUT_S - (time.monotonic() - started)
            done = subprocess.run(step, stdout=sink, stderr=sink, timeout=max(left, 1.0))
            if done.returncode != 0:
                raise BenchError(f"installing BentoML failed: {' '.join(step)}\n{log_tail(log)}")
    if (version := installed_version()) != VERSION:
        raise BenchError(f"BentoML venv has bentoml {version}, expected {VERSION}")
    return version


@dataclass
class BentoServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> dict[str, int]:
        """`bentoml serve` and one process per service, by service name."""
        pids = {"bentoml serve": self.process.pid}
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    argv = child.cmdline()
                    flag = "--service-name"
                    name = argv[argv.index(flag) + 1] if flag in argv else ""
                    pids[f"service {name}" if name else f"pid {child.pid}"] = child.pid
        return pids


def start(work_dir: Path, models: Path, name: str, max_requests: int | None) -> BentoServer:
    """`bentoml serve service:InferenceGraph` on a free loopback port (returns at once;
    `wait_ready` waits for it). `max_requests` sets runner_connection.max_requests of the
    services (None keeps BentoML's default, 100)."""
    port = free_port()  # bentoml serve cannot report a port it picked
    log_path = work_dir / f"{name}.log"
    env = {
        **os.environ,
        **FAIR_ENV,
        "BENTOML_HOME": str(work_dir / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "COMPOSER_BENCH_MODELS": str(models),
    }
    env.pop("VIRTUAL_ENV", None)
    if max_requests is not None:
        env["COMPOSER_BENCH_MAX_REQUESTS"] = str(max_requests)
    command = [str(bentoml_bin()), "serve", "service:InferenceGraph"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=SERVICE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one below
        )
    settings = {"runner_connection.max_requests": max_requests or "100 (default)"}
    return BentoServer(process, port, log_path, settings)


def wait_ready(server: BentoServer, timeout: float = START_TIMEOUT_S) -> float:
    """Polls /readyz until BentoML serves; returns seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            raise BenchError(f"bentoml exited with {server.process.returncode}:\n"
                             f"{log_tail(server.log_path)}")  # fmt: skip
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return time.monotonic() - started
        time.sleep(0.2)
    stop(server)
    raise BenchError(f"bentoml not ready within {timeout:.0f} s:\n{log_tail(server.log_path)}")


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): .*")


def server_errors(server: BentoServer) -> Counter[str]:
    """Exception lines (`module.SomeError: message`) in BentoML's log so far, counted."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return Counter()
    return Counter(m.group(0)[:200] for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m)


def stop(server: BentoServer) -> None:
    """SIGTERM to `bentoml serve` (it stops its services), then SIGKILL to its group."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)  # the group we created; leftovers only
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(STOP_TIMEOUT_S)
