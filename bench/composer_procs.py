"""Processes of the composer bench: modelyard stacks, the BentoML baseline, the load
generator, and RSS sampling of whole process sets.

A modelyard stack is `modelyard_cli.stack.Stack` (etcd, control plane, workers, composer as real
processes, as `modelyard up` starts them). BentoML runs from its own venv
(`.cache/bentoml-venv`, created here on first use) so that the project's venv is never
touched. Everything listens on 127.0.0.1; every wait has a time limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from bench import procs
from bench.procs import REPO, BenchError, free_port, log_tail
from modelyard_cli.graph_output import deploy_files
from modelyard_cli.stack import Stack

BENTOML_VENV = REPO / ".cache" / "bentoml-venv"
BENTOML_VERSION = "1.4.39"  # 1.4.40 does not resolve here (shared/ENVIRONMENT.md)
# torch first and pinned in both commands: anything unpinned pulls a multi-GB CUDA build
BENTOML_INSTALL = (
    ["torch==2.13.0"],
    [
        "torch==2.13.0",
        f"bentoml=={BENTOML_VERSION}",
        "transformers==5.23.*",
        "tokenizers>=0.23,<0.24",
        "psutil",
    ],
)
BENTOML_SERVICE = REPO / "bench" / "bentoml_service"
INSTALL_TIMEOUT_S = 900.0
BENTOML_START_TIMEOUT_S = 150.0
STACK_START_TIMEOUT_S = 180.0  # per worker: it imports torch and loads every model first
STOP_TIMEOUT_S = 20.0
# Both systems get one OpenMP thread per process: on 2 cores torch's default (a thread per
# core in every process) oversubscribes the machine. modelyard's workers also set torch to
# one thread per model (`threads: 1`, the default); the BentoML service does the same.
FAIR_ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# -- modelyard stacks ---------------------------------------------------------------------


@contextlib.contextmanager
def children_output_to(path: Path) -> Iterator[None]:
    """Processes spawned inside inherit `path` as stdout and stderr (Stack's services
    inherit ours), so this process's stdout keeps only the bench's JSON lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@dataclass
class StackProcs:
    stack: Stack
    pids: dict[str, int]  # "etcd", "controlplane", "worker <id>", "composer" -> pid

    @property
    def composer(self) -> str:
        return self.stack.composer


def _label(process: psutil.Process) -> str:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    if argv and Path(argv[0]).name == "etcd":
        return "etcd"
    for kind in ("controlplane", "composer"):
        if kind in argv:
            return kind
    if "worker" in argv and "--config" in argv:
        return f"worker {Path(argv[argv.index('--config') + 1]).stem}"
    return " ".join(argv[:3])


def _children() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=False)}


def _with_descendants(processes: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    found = dict(processes)
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            found.update({p.pid: p for p in process.children(recursive=True)})
    return found


@contextlib.contextmanager
def modelyard_stack(stack_file: Path, work_dir: Path, name: str) -> Iterator[StackProcs]:
    """Starts a whole stack (what `modelyard up` starts), deploys its graphs, stops it."""
    env = {k: os.environ.get(k) for k in FAIR_ENV}
    os.environ.update(FAIR_ENV)  # inherited by the stack's processes
    before = _children()
    stack = Stack(stack_file, work_dir=work_dir)
    try:
        with children_output_to(work_dir.parent / f"{name}.log"):
            stack.start(timeout=STACK_START_TIMEOUT_S)
        # our own new children and theirs: not a server started before (BentoML's services)
        new = _with_descendants({pid: p for pid, p in _children().items() if pid not in before})
        pids = {_label(p): pid for pid, p in sorted(new.items())}
        deploy_files(stack.composer, stack.graph_files(), Console(file=io.StringIO()))
        yield StackProcs(stack, pids)
    finally:
        stack.stop()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- BentoML ------------------------------------------------------------------------------


def bentoml_bin() -> Path:
    return BENTOML_VENV / "bin" / "bentoml"


def installed_bentoml_version() -> str | None:
    python = BENTOML_VENV / "bin" / "python"
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


def ensure_bentoml_venv(log: Path) -> str:
    """The BentoML venv, created on first use (about 1.5 min); returns bentoml's version."""
    if (version := installed_bentoml_version()) == BENTOML_VERSION:
        return version
    started = time.monotonic()
    pip = [str(BENTOML_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    steps = [[sys.executable, "-m", "venv", "--clear", str(BENTOML_VENV)]]
    steps += [pip + list(packages) for packages in BENTOML_INSTALL]
    with log.open("ab") as sink:
        for step in steps:
            left = INSTALL_TIMEOUT_S - (time.monotonic() - started)
            done = subprocess.run(step, stdout=sink, stderr=sink, timeout=max(left, 1.0))
            if done.returncode != 0:
                raise BenchError(f"installing BentoML failed: {' '.join(step)}\n{log_tail(log)}")
    if (version := installed_bentoml_version()) != BENTOML_VERSION:
        raise BenchError(f"BentoML venv has bentoml {version}, expected {BENTOML_VERSION}")
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


def start_bentoml(work_dir: Path, models: Path, name: str, max_requests: int | None) -> BentoServer:
    """`bentoml serve service:InferenceGraph` on a free loopback port (returns at once;
    `wait_ready` waits for it). `max_requests` sets runner_connection.max_requests of the
    services (None keeps BentoML's default, 100)."""
    port = free_port()
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
            cwd=BENTOML_SERVICE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one below
        )
    settings = {"runner_connection.max_requests": max_requests or "100 (default)"}
    return BentoServer(process, port, log_path, settings)


def wait_ready(server: BentoServer, timeout: float = BENTOML_START_TIMEOUT_S) -> float:
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
    stop_bentoml(server)
    raise BenchError(f"bentoml not ready within {timeout:.0f} s:\n{log_tail(server.log_path)}")


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): .*")


def server_errors(server: BentoServer) -> Counter[str]:
    """Exception lines (`module.SomeError: message`) in BentoML's log so far, counted."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return Counter()
    return Counter(m.group(0)[:200] for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m)


def stop_bentoml(server: BentoServer) -> None:
    """SIGTERM to `bentoml serve` (it stops its services), then SIGKILL to its group."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGKILL)  # the group we created; leftovers only
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(STOP_TIMEOUT_S)


# -- the load generator, measured when the machine is calm ----------------------------------


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    limit = 2 * float(spec.get("time_cap_s", 20.0)) + 60.0
    done = subprocess.run(
        [sys.executable, "-m", "bench.composer_load", json.dumps(spec)],
        capture_output=True,
        timeout=limit,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        tail = done.stderr.decode()[-3000:]
        raise BenchError(f"load generator failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def Quiet() -> procs.Quiet:
    """bench.procs.Quiet running this bench's load generator, with a tighter budget."""
    return procs.Quiet(budget_s=30.0, max_attempts=2, calm_wait_s=2.0, load=run_load)


def cpu_idle_pct(pids: list[int], seconds: float = 2.0) -> float:
    """CPU the processes use while nobody calls them (% of one core)."""

    def used() -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    before = used()
    time.sleep(seconds)
    return round(100 * (used() - before) / seconds, 1)


# -- RSS of process sets --------------------------------------------------------------------


class SetRss:
    """Samples the summed RSS of named processes in a thread while active; keeps, per
    process and for the sum, the peak and the mean over samples."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.1) -> None:
        self._procs = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self._procs[name] = psutil.Process(pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak: dict[str, int] = dict.fromkeys(self._procs, 0)
        self.sums: dict[str, int] = dict.fromkeys(self._procs, 0)
        self.peak_total = 0
        self.sum_total = 0
        self.samples = 0

    def snapshot(self) -> dict[str, int]:
        sizes = {}
        for name, process in self._procs.items():
            try:
                sizes[name] = int(process.memory_info().rss)
            except psutil.Error:
                sizes[name] = 0
        return sizes

    def sample(self) -> None:
        sizes = self.snapshot()
        for name, size in sizes.items():
            self.peak[name] = max(self.peak[name], size)
            self.sums[name] += size
        total = sum(sizes.values())
        self.peak_total = max(self.peak_total, total)
        self.sum_total += total
        self.samples += 1

    def __enter__(self) -> SetRss:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def report(self) -> dict[str, Any]:
        mb = 1024 * 1024
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "peak_total_mb": round(self.peak_total / mb, 1),
            "mean_total_mb": round(self.sum_total / n / mb, 1),
            "peak_mb": {name: round(size / mb, 1) for name, size in self.peak.items()},
            "mean_mb": {name: round(size / n / mb, 1) for name, size in self.sums.items()},
        }
