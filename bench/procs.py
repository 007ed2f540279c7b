"""Processes of a bench run: servers started for real, the load generator, RSS sampling.

Everything listens on 127.0.0.1 with port 0 (the server reports the port it bound through a
port file) and every wait has a time limit, so a broken server fails the run instead of
hanging it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

HOST = "127.0.0.1"
# Children run from the repository root, so `-m bench.…` and `-m modelyard.…` import from
# this checkout whatever directory the bench was started in.
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0  # a worker imports torch and loads every model before it writes its port
STOP_TIMEOUT_S = 15.0


class BenchError(RuntimeError):
    """A process of the bench failed; the message carries the end of its log."""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def free_port() -> int:
    """A port free right now on loopback (only for servers that cannot report theirs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# A server's command line, given the port file it must write its bound port to.
Command = Callable[[Path], list[str]]


def worker_command(config: Path) -> Command:
    # `python -m modelyard_cli.main` is the `modelyard` console script without its wrapper
    # process, so the pid we measure is the worker itself.
    def argv(port_file: Path) -> list[str]:
        return [sys.executable, "-m", "modelyard_cli", "worker", "--config", str(config),
                "--port", "0", "--port-file", str(port_file)]  # fmt: skip

    return argv


def echo_server_command() -> Command:
    return lambda port_file: [
        sys.executable, "-m", "bench.echo_server", "--port-file", str(port_file)
    ]  # fmt: skip


def write_worker_config(path: Path, models: list[dict[str, Any]], **settings: Any) -> Path:
    # safe_dump quotes names YAML would read as booleans ("on", "off", "yes")
    path.write_text(yaml.safe_dump({"host": HOST, "models": models, **settings}, sort_keys=False))
    return path


def wait_for_port(name: str, process: subprocess.Popen[bytes], port_file: Path, log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}:\n{log_tail(log)}")
        time.sleep(0.05)
    raise BenchError(f"{name} wrote no port within {START_TIMEOUT_S:.0f} s:\n{log_tail(log)}")


def start(
    name: str, command: Command, workdir: Path, on_spawn: Callable[[int], None] | None = None
) -> Server:
    """Starts a server and returns once it wrote its port; `on_spawn(pid)` runs before that
    (to watch the process from its very start)."""
    port_file, log_path = workdir / f"{name}.port", workdir / f"{name}.log"
    port_file.unlink(missing_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(port_file), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
    try:
        if on_spawn is not None:
            on_spawn(process.pid)
        port = wait_for_port(name, process, port_file, log_path)
    except BaseException:
        stop_process(process)
        raise
    return Server(name, process, port, log_path)


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the graceful path), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
    return process.returncode


@contextlib.contextmanager
def serving(
    name: str, command: Command, workdir: Path, on_spawn: Callable[[int], None] | None = None
) -> Iterator[Server]:
    server = start(name, command, workdir, on_spawn)
    try:
        yield server
    finally:
        stop_process(server.process)


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs `bench.loadgen` in its own process; its result as a dict."""
    limit = 2 * float(spec.get("time_cap_s", 20.0)) + 60.0  # warm-up and measured phase
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        capture_output=True,
        timeout=limit,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        raise BenchError(
            f"load generator failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


# Other work on the machine above this (percent of one core, summed over cores) during a
# measurement makes it "disturbed": on 2 cores, a test run elsewhere takes half the machine.
DISTURBED_PCT = 25.0


def busy_pct(interval_s: float = 0.25) -> float:
    """How busy the whole machine is, in percent of one core summed over cores."""
    return float(psutil.cpu_percent(interval=interval_s)) * (os.cpu_count() or 1)


@dataclass
class Quiet:
    """Measures when the machine is calm, and repeats a disturbed measurement, within a
    time budget for the whole run (so a busy machine slows the bench down only so much)."""

    budget_s: float = 45.0
    max_attempts: int = 3
    calm_wait_s: float = 5.0
    spent_s: float = 0.0
    # the load generator to run: bench.loadgen by default; other benches pass their own
    load: Callable[[dict[str, Any]], dict[str, Any]] = run_load

    def run_load(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`run_load`, repeated while other work disturbed it and budget remains.

        Keeps the attempt with the least foreign CPU use: the choice depends on the
        machine's other load, never on the figures measured, so it does not flatter them.
        """
        best: dict[str, Any] | None = None
        for attempt in range(1, self.max_attempts + 1):
            self._wait_for_calm()
            started = time.monotonic()
            result = self.load(spec)
            if attempt > 1:
                self.spent_s += time.monotonic() - started
            result["attempts"] = attempt
            if best is None or result["other_cpu_pct"] < best["other_cpu_pct"]:
                best = result
            if result["other_cpu_pct"] <= DISTURBED_PCT or self.spent_s >= self.budget_s:
                break
        assert best is not None
        best["disturbed"] = best["other_cpu_pct"] > DISTURBED_PCT
        return best

    def _wait_for_calm(self) -> None:
        deadline = time.monotonic() + min(self.calm_wait_s, self.budget_s - self.spent_s)
        started = time.monotonic()
        while busy_pct() > DISTURBED_PCT and time.monotonic() < deadline:
            pass
        waited = time.monotonic() - started
        self.spent_s += max(0.0, waited - 0.25)  # one reading is the normal cost


def scrape_batch_sizes(metrics_port: int) -> dict[str, tuple[float, float]]:
    """model -> (sum, count) of `modelyard_worker_batch_size` from the worker's /metrics."""
    url = f"http://{HOST}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for suffix, target in (("_sum{", sums), ("_count{", counts)):
            prefix = f"modelyard_worker_batch_size{suffix}"
            if line.startswith(prefix):
                labels, value = line[len(prefix) :].rsplit("} ", 1)
                target[_label(labels, "model")] = float(value)
    return {model: (sums[model], counts.get(model, 0.0)) for model in sums}


def _label(labels: str, name: str) -> str:
    for pair in labels.split(","):
        key, _, value = pair.partition("=")
        if key == name:
            return value.strip('"')
    return ""


class RssSampler:
    """Samples the resident memory of a process and its children in a thread; keeps the peak.

    The sum over children counts pages they share with the parent twice, so it is an upper
    bound; `peak_main_bytes` is the worker process alone.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self._interval = interval_s
        self._process: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_bytes = 0
        self.peak_main_bytes = 0
        self.last_bytes = 0
        self.samples = 0

    def attach(self, pid: int) -> None:
        """Starts sampling `pid` (pass it as `on_spawn` to see start-up and model loading)."""
        self._process = psutil.Process(pid)
        self._thread.start()

    def __enter__(self) -> RssSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def sample(self) -> int:
        """Takes one sample now; returns it (bytes, 0 when the process is gone)."""
        if self._process is None:
            return 0
        try:
            main = self._process.memory_info().rss
            children = sum(_rss(child) for child in self._process.children(recursive=True))
        except psutil.Error:
            return 0  # the process is gone: keep the peak seen so far
        self.last_bytes = main + children
        self.peak_bytes = max(self.peak_bytes, self.last_bytes)
        self.peak_main_bytes = max(self.peak_main_bytes, main)
        self.samples += 1
        return self.last_bytes

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0  # a child that exited between listing and reading
