"""modelyard stacks for the composer bench: `modelyard_cli.stack.Stack` (etcd, control
plane, workers, composer as real processes, as `modelyard up` starts them), graphs deployed,
and the process ids of the whole set (for CPU, RSS and profiles)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common.paths import REPO
from composer.spec import load_graph
from modelyard.composer_client import ComposerClient
from modelyard_cli.stack import Stack

STACK_START_TIMEOUT_S = 180.0  # per worker: it imports torch and loads every model first
# Both systems under comparison get one OpenMP thread per process: on 2 cores torch's
# default (a thread per core in every process) oversubscribes the machine. modelyard's
# workers also set torch to one thread per model (`threads: 1`, the default); the BentoML
# service does the same.
FAIR_ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class StackProcs:
    stack: Stack
    pids: dict[str, int]  # "etcd", "controlplane", "worker <id>", "composer", "gateway" -> pid

    @property
    def composer(self) -> str:
        return self.stack.composer

    def address_of(self, model: str) -> str:
        """The address of the worker that serves `model` (from the stack file)."""
        for index, worker in enumerate(self.stack.spec()["workers"]):
            if any(m["name"] == model for m in worker.get("models", [])):
                return self.stack.workers[worker.get("worker_id") or f"worker-{index}"]
        raise KeyError(f"no worker of {self.stack.stack_file} serves {model!r}")

    def pid_of(self, address: str) -> int:
        worker_id = next(w for w, a in self.stack.workers.items() if a == address)
        return self.pids[f"worker {worker_id}"]


def _label(process: psutil.Process) -> str:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    if argv and Path(argv[0]).name == "etcd":
        return "etcd"
    for kind in ("controlplane", "composer", "gateway"):
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


def _belongs(process: psutil.Process, stack: Stack) -> bool:
    """Whether a process is one of `stack`'s services: an argument lies in the stack's work
    folder (etcd's data, the worker configs) or is its etcd's or composer's address (the
    control plane, the composer, the gateway)."""
    assert stack.etcd is not None
    folder, addresses = str(stack.work_dir), {stack.etcd.endpoint, stack.composer}
    try:
        argv = process.cmdline()
    except psutil.Error:
        return False
    return any(arg in addresses or folder in arg for arg in argv)


def _stack(
    stack_file: Path, work_dir: Path, env: Mapping[str, str] | None, *, tls: bool = False
) -> Stack:
    # the stack's processes get this process's environment (its OTEL_* variables aside:
    # the bench removes them at start, see __main__) and these, on top
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    extra = {**FAIR_ENV, "PYTHONPATH": python_path, **(env or {})}
    return Stack(stack_file, work_dir=work_dir, env=extra, tls=tls)


def _deploy(stack: Stack) -> None:
    """The stack file's graphs, with the stack's own credentials (its CA and admin token
    under --tls)."""
    call = stack.client()
    with ComposerClient(
        stack.composer, timeout=30, credentials=call.credentials, token=call.token
    ) as client:
        for path in stack.graph_files():
            client.deploy(load_graph(path))


def _started(stacks: list[Stack], before: dict[int, psutil.Process]) -> list[StackProcs]:
    """Each started stack with the ids of its processes (this process's new children and
    theirs: not a server started before, such as BentoML's), its graphs deployed."""
    new = _with_descendants({pid: p for pid, p in _children().items() if pid not in before})
    started = []
    for stack in stacks:
        mine = {pid: p for pid, p in new.items() if len(stacks) == 1 or _belongs(p, stack)}
        pids = {_label(p): pid for pid, p in sorted(mine.items())}
        _deploy(stack)
        started.append(StackProcs(stack, pids))
    return started


@contextlib.contextmanager
def modelyard_stack(
    stack_file: Path, work_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[StackProcs]:
    """Starts a whole stack (what `modelyard up` starts), deploys its graphs, stops it.

    Its services log to `work_dir` and see `env` on top of this process's environment.
    Stack exposes no process ids, so they are found as this process's new children.
    """
    before = _children()
    stack = _stack(stack_file, work_dir, env)
    try:
        stack.start(timeout=STACK_START_TIMEOUT_S)
        (procs,) = _started([stack], before)
        yield procs
    finally:
        stack.stop()


@contextlib.contextmanager
def modelyard_stacks(
    stack_file: Path,
    work_dir: Path,
    envs: Mapping[str, Mapping[str, str]],
    *,
    tls: Collection[str] = (),
) -> Iterator[dict[str, StackProcs]]:
    """Stacks of one stack file side by side, one per entry of `envs` (name -> its
    services' environment), those named in `tls` as `modelyard up --tls` starts them. They
    start one after another (workers loading torch models side by side on two cores can
    miss their start-up deadline), and stop together."""
    before = _children()
    stacks = {
        name: _stack(stack_file, work_dir / name, env, tls=name in tls)
        for name, env in envs.items()
    }
    try:
        for stack in stacks.values():
            stack.start(timeout=STACK_START_TIMEOUT_S)
        procs = _started(list(stacks.values()), before)
        yield dict(zip(stacks, procs, strict=True))
    finally:
        with ThreadPoolExecutor(len(stacks)) as pool:
            for stopped in [pool.submit(stack.stop) for stack in stacks.values()]:
                stopped.result()
