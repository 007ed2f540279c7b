"""Starting modelyard services as real processes on free ports, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Launched:
    """A service process that may not serve yet: `address()` says when it does."""

    name: str
    process: subprocess.Popen[bytes]
    port_file: Path
    host: str
    deadline: float
    timeout: float
    log_file: Path | None

    def address(self) -> str | None:
        """host:port once it serves, None while it starts; raises RuntimeError once it has
        exited or missed its deadline (killed then)."""
        if self.port_file.exists():
            return f"{self.host}:{self.port_file.read_text()}"
        if self.process.poll() is not None:
            where = f"; see {self.log_file}" if self.log_file is not None else ""
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode} while starting{where}"
            )
        if time.monotonic() > self.deadline:
            self.process.kill()
            self.process.wait(10)
            raise RuntimeError(f"{self.name} did not start serving within {self.timeout:.0f} s")
        return None


def launch_service(
    command: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
) -> Launched:
    """Runs `modelyard <command...> --port 0 --port-file F` and returns at once.

    Every service writes its port file only once it serves (a worker: once its models have
    loaded). With `log_file`, the service's output goes there instead of the caller's
    terminal. The service runs in its own process group: a Ctrl-C at the terminal reaches
    only the caller, which stops its services itself, in order.
    """
    port_file = Path(tempfile.mkdtemp(prefix="modelyard-")) / "port"
    log = log_file.open("ab") if log_file is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard_cli", *command,
         "--host", host, "--port", "0", "--port-file", str(port_file)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             **(env or {})},
        stdout=log, stderr=log, process_group=0,
    )  # fmt: skip
    if log is not None:
        log.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout
    return Launched(command[0], process, port_file, host, deadline, timeout, log_file)


def start_service(
    command: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """`launch_service`, then waits until it is serving: returns the process and its address."""
    launched = launch_service(command, timeout=timeout, env=env, host=host, log_file=log_file)
    while (address := launched.address()) is None:
        time.sleep(0.02)
    return launched.process, address


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
