"""Starting modelyard services as real processes on free ports, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def start_service(
    command: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Runs `modelyard <command...> --port 0 --port-file F` and waits until it is serving.

    Returns the process and its address. Every service writes its port file only once it
    serves (a worker: once its models have loaded). With `log_file`, the service's output
    goes there instead of the caller's terminal.
    """
    port_file = Path(tempfile.mkdtemp(prefix="modelyard-")) / "port"
    log = log_file.open("ab") if log_file is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard_cli", *command,
         "--host", host, "--port", "0", "--port-file", str(port_file)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             **(env or {})},
        stdout=log, stderr=log,
    )  # fmt: skip
    if log is not None:
        log.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None:
            where = f"; see {log_file}" if log_file is not None else ""
            raise RuntimeError(
                f"{command[0]} exited with code {process.returncode} while starting{where}"
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"{command[0]} did not start serving within {timeout:.0f} s")
        time.sleep(0.02)
    return process, f"{host}:{port_file.read_text()}"


def stop_service(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, as an orchestrator stops a service; returns its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def import_path_env(folder: Path) -> dict[str, str]:
    """The environment that puts `folder` first on a child's import path, so a config's
    `class: module:Name` finds the modules beside it (examples/custom_models.py)."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    }
