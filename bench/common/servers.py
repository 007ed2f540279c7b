"""Servers of a bench run, as real processes on 127.0.0.1 with port 0.

Two kinds of command:

- `Service`: a `modelyard` command (a worker, a control plane), started by
  `modelyard_cli.processes.launch_service` exactly as `modelyard up` starts it, and stopped
  by `stop_service` (SIGTERM, the graceful path).
- `Program`: one of the bench's own servers (the bare echo server, the patched worker, the
  control plane under the GC probe), `python -m <module>`, taking the same
  `--host --port 0 --port-file` flags; launch_service runs only `modelyard` commands.

A server is up once it wrote its port file (a worker: once every model loaded), and every
wait has a time limit, so a broken server fails the run instead of hanging it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common.errors import BenchError, log_tail
from bench.common.paths import REPO
from modelyard_cli.processes import Launched, import_path_env, launch_service, stop_service

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0  # a worker imports torch and loads every model before it serves
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Service:
    """`modelyard <args>`; launch_service adds the host, port and port-file flags."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class Program:
    """`python -m <module> <args> --host H --port 0 --port-file F`: a bench server."""

    module: str
    args: tuple[str, ...] = ()


Command = Service | Program


def worker(config: Path) -> Service:
    return Service(("worker", "--config", str(config)))


def controlplane(etcd_endpoint: str) -> Service:
    return Service(("controlplane", "--etcd", etcd_endpoint))


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


def write_worker_config(path: Path, models: list[dict[str, Any]], **settings: Any) -> Path:
    # safe_dump quotes names YAML would read as booleans ("on", "off", "yes")
    path.write_text(yaml.safe_dump({"host": HOST, "models": models, **settings}, sort_keys=False))
    return path


def start(
    name: str, command: Command, workdir: Path, on_spawn: Callable[[int], None] | None = None
) -> Server:
    """Starts a server and returns once it serves; its output goes to `workdir/name.log`.

    `on_spawn(pid)` runs as soon as the process exists, to watch it from its very start
    (the peak-RSS scenario).
    """
    log_path = workdir / f"{name}.log"
    if isinstance(command, Program):
        return _serving(_launch_program(name, command, log_path), on_spawn)
    launched = launch_service(
        list(command.args),
        timeout=START_TIMEOUT_S,
        env=import_path_env(REPO),
        host=HOST,
        log_file=log_path,
    )
    return _serving(launched, on_spawn)


def _launch_program(name: str, command: Program, log_path: Path) -> Launched:
    """A bench program launched the way launch_service launches a modelyard service."""
    port_file = log_path.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", command.module, *command.args,
            "--host", HOST, "--port", "0", "--port-file", str(port_file)]  # fmt: skip
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + START_TIMEOUT_S
    return Launched(name, process, port_file, HOST, deadline, START_TIMEOUT_S, log_path)


def _serving(launched: Launched, on_spawn: Callable[[int], None] | None) -> Server:
    """Waits until a launched server serves (its port file is written)."""
    assert launched.log_file is not None
    try:
        if on_spawn is not None:
            on_spawn(launched.process.pid)
        while (address := launched.address()) is None:
            time.sleep(0.02)
    except RuntimeError as error:  # it exited, or missed its deadline
        raise BenchError(f"{launched.name}: {error}:\n{log_tail(launched.log_file)}") from None
    except BaseException:
        _stop_process(launched.process)
        raise
    return Server(launched.name, launched.process, address, launched.log_file)


def stop(server: Server) -> int:
    """SIGTERM (the graceful path), then SIGKILL if it does not exit in time."""
    return _stop_process(server.process)


def stop_all(servers: list[Server]) -> None:
    """Stops servers side by side: each takes a while to exit after its graceful stop."""
    with ThreadPoolExecutor(max(1, len(servers)), thread_name_prefix="stop") as pool:
        list(pool.map(stop, servers))


def _stop_process(process: subprocess.Popen[bytes]) -> int:
    try:
        return stop_service(process, timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(STOP_TIMEOUT_S)


def run_modelyard_here(args: list[str]) -> None:
    """Runs `modelyard <args>` in this process: how a Program serves that is a modelyard
    service with something patched in or watched first (gc_probe, patched_worker)."""
    from modelyard_cli.main import main  # after the caller's patches, as a CLI run would

    sys.argv = ["modelyard", *args]
    main()


@contextlib.contextmanager
def serving(
    name: str, command: Command, workdir: Path, on_spawn: Callable[[int], None] | None = None
) -> Iterator[Server]:
    server = start(name, command, workdir, on_spawn)
    try:
        yield server
    finally:
        stop(server)
