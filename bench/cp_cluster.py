"""Pieces of a control-plane bench run: the control-plane and worker commands, JSON-line
child processes, a timestamping WatchEndpoints subscriber, and CPU/RSS accounting.

Everything is on 127.0.0.1 with ports picked by the servers (port 0 + port file) or by
the OS, and every wait has a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio
import psutil

from bench.loadgen import machine_busy_seconds
from bench.procs import HOST, REPO, BenchError, Command, log_tail, write_worker_config
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc

SLOW_ECHO = "tests.support.models:SlowEcho"
# Children's JSON lines can be long (a fleet's 250 addresses, a 30 s timeline).
LINE_LIMIT = 16 * 1024 * 1024


def controlplane_command(etcd_endpoint: str) -> Command:
    # `-m modelyard_cli.main` is the console script without its wrapper process: the pid we
    # sample and profile is the control plane itself.
    def argv(port_file: Path) -> list[str]:
        return [sys.executable, "-m", "modelyard_cli", "controlplane", "--etcd", etcd_endpoint,
                "--port", "0", "--port-file", str(port_file)]  # fmt: skip

    return argv


def probed_controlplane_command(etcd_endpoint: str) -> Command:
    """The control plane under bench.cp_gc_probe: collector pauses logged, SIGUSR1 freezes."""
    plain = controlplane_command(etcd_endpoint)

    def argv(port_file: Path) -> list[str]:
        python, _, _, *rest = plain(port_file)  # drop "-m modelyard_cli.main"
        return [python, "-m", "bench.cp_gc_probe", "--freeze-on-sigusr1", *rest]

    return argv


def slow_echo_config(
    workdir: Path,
    worker_id: str,
    etcd_endpoint: str,
    *,
    model: str,
    delay_ms: float,
    tags: dict[str, str] | None = None,
    metrics_port: int = -1,
) -> Path:
    """A worker serving SlowEcho unbatched (so `delay_ms` is paid per call), registered in
    etcd under a 2 s lease."""
    models = [
        {
            "name": model,
            "class": SLOW_ECHO,
            "options": {"delay_ms": delay_ms},
            "batching": {"max_batch_size": 1},
        }
    ]
    return write_worker_config(
        workdir / f"{worker_id}.yaml",
        models,
        worker_id=worker_id,
        etcd={"endpoints": [etcd_endpoint]},
        lease_ttl=2,
        tags=tags or {},
        metrics_port=metrics_port,
    )


def scrape_in_flight(metrics_port: int, model: str) -> int:
    """The worker's `modelyard_worker_in_flight` gauge for `model`, from its /metrics."""
    url = f"http://{HOST}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    prefix = f'modelyard_worker_in_flight{{model="{model}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return 0


# -- JSON-line children -------------------------------------------------------------------


@dataclass
class Child:
    """A child process that speaks JSON lines on stdin/stdout (bench.cp_load,
    bench.fake_workers); its stderr goes to a log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, record: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(record) + "\n").encode())
        await self.process.stdin.drain()

    async def next_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line whose "event" is `event` (others are skipped)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while line := await self.process.stdout.readline():
                record: dict[str, Any] = json.loads(line)
                if record.get("event") == event:
                    return record
        tail = log_tail(self.log_path)
        raise BenchError(f"{self.name} ended before sending {event!r}:\n{tail}")

    async def stop(self, timeout: float = 15.0) -> None:
        """Closes stdin (fakes take that as 'stop'), then SIGTERM, then SIGKILL."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        for signal_it in (None, self.process.terminate, self.process.kill):
            if self.process.returncode is not None:
                return
            if signal_it is not None:
                signal_it()
            try:
                await asyncio.wait_for(self.process.wait(), timeout / 3)
            except TimeoutError:
                continue


async def spawn(name: str, argv: list[str], workdir: Path) -> Child:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            limit=LINE_LIMIT,
        )
    return Child(name, process, log_path)


async def run_load(spec: dict[str, Any], workdir: Path, name: str = "cp-load") -> dict[str, Any]:
    """Runs `bench.cp_load` to completion; its result."""
    child = await spawn(name, [sys.executable, "-m", "bench.cp_load", json.dumps(spec)], workdir)
    try:
        limit = 2 * float(spec.get("time_cap_s", 20.0)) + 60.0  # warm-up and measured phase
        return await child.next_event("result", limit)
    finally:
        await child.stop()


# -- the endpoint stream, timestamped ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One endpoint set as a subscriber received it."""

    at: float  # time.monotonic() when the message was read
    version: int
    ids: frozenset[str]


class SetFollower:
    """Subscribes to WatchEndpoints for one model and keeps every set it receives with the
    time it arrived, so a change made at t0 is matched with the first set after t0 that
    reflects it (not merely the next message: the control plane also re-sends sets
    periodically with fresh load)."""

    def __init__(self, address: str, model: str, selector: str = "") -> None:
        self.address = address
        self.request = cp.WatchEndpointsRequest(model=model, selector=selector)
        self.history: list[Arrival] = []
        self._news = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SetFollower:
        # large sets (1,000 endpoints) are ~100 KB: well under gRPC's 4 MB default
        self._channel = grpc.aio.insecure_channel(self.address)
        call = controlplane_pb2_grpc.ControlPlaneStub(self._channel).WatchEndpoints(self.request)
        self._task = asyncio.create_task(self._follow(call))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def _follow(self, call: Any) -> None:
        async for reply in call:
            at = time.monotonic()
            ids = frozenset(e.worker_id for e in reply.endpoints)
            self.history.append(Arrival(at, reply.version, ids))
            news, self._news = self._news, asyncio.Event()
            news.set()

    def mark(self) -> int:
        """A position in the history: `wait_for` looks only at sets received after it."""
        return len(self.history)

    @property
    def latest(self) -> frozenset[str]:
        return self.history[-1].ids if self.history else frozenset()

    async def wait_for(
        self, predicate: Callable[[frozenset[str]], bool], since: int, timeout: float
    ) -> Arrival | None:
        """The first set received after `since` that satisfies `predicate`; None if none
        came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for arrival in self.history[since:]:
                if predicate(arrival.ids):
                    return arrival
            since = len(self.history)
            self._raise_if_broken()
            news = self._news
            try:
                await asyncio.wait_for(news.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None

    def _raise_if_broken(self) -> None:
        if self._task is not None and self._task.done():
            error = self._task.exception()
            raise BenchError(f"the endpoint stream from {self.address} ended: {error}")


WATCH_ENDPOINTS = "/modelyard.v1.ControlPlane/WatchEndpoints"


class RawSubscribers:
    """`count` more WatchEndpoints streams, each on its own connection (as separate composers
    would be), read as bytes and never parsed: load on the control plane, not on us."""

    def __init__(self, address: str, model: str, count: int) -> None:
        self.address = address
        self.request = cp.WatchEndpointsRequest(model=model)
        self.count = count
        self.messages = 0
        self.bytes = 0
        self._started = 0  # streams that got their first set
        self._all_started = asyncio.Event()
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RawSubscribers:
        for _ in range(self.count):
            channel = grpc.aio.insecure_channel(
                self.address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            watch: Any = channel.unary_stream(
                WATCH_ENDPOINTS,
                request_serializer=cp.WatchEndpointsRequest.SerializeToString,
                response_deserializer=None,  # bytes
            )
            self._channels.append(channel)
            self._tasks.append(asyncio.create_task(self._drain(watch(self.request))))
        return self

    async def _drain(self, call: Any) -> None:
        first = True
        async for raw in call:
            self.messages += 1
            self.bytes += len(raw)
            if first:
                first, self._started = False, self._started + 1
                if self._started == self.count:
                    self._all_started.set()

    async def wait_first(self, timeout: float) -> None:
        """Until every stream got its first set (or `timeout` passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_started.wait(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in self._channels))


# -- CPU and memory -----------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def tree_pids() -> list[int]:
    """This process and every descendant: all the work the bench itself causes."""
    me = psutil.Process()
    return [me.pid, *(child.pid for child in me.children(recursive=True))]


@dataclass
class CpuWindow:
    """CPU use of named processes over a window, and how much of the machine other work took
    (other engineers' tests on a 2-core machine skew latency figures: record it)."""

    pids: dict[str, list[int]]
    started: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    tree_before: float = 0.0
    machine_before: float = 0.0

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self.before = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        self.tree_before = cpu_seconds(tree_pids())
        self.machine_before = machine_busy_seconds()
        return self

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        used = {n: cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}
        # children that exited inside the window drop out of the tree sum: "other" is
        # then over-counted, never under-counted
        ours = cpu_seconds(tree_pids()) - self.tree_before
        machine = machine_busy_seconds() - self.machine_before
        result: dict[str, Any] = {f"{n}_cpu_pct": pct(s, wall) for n, s in used.items()}
        result["window_s"] = round(wall, 2)
        result["bench_tree_cpu_pct"] = pct(ours, wall)
        result["machine_cpu_pct"] = pct(machine, wall)
        result["other_cpu_pct"] = pct(max(0.0, machine - ours), wall)
        return result


def pct(seconds: float, wall: float) -> float:
    """Percent of one core (200 = both cores of a 2-core machine)."""
    return round(100.0 * seconds / wall, 1) if wall > 0 else 0.0


def rss_mb(pid: int) -> float:
    try:
        return round(psutil.Process(pid).memory_info().rss / (1024 * 1024), 1)
    except psutil.Error:
        return 0.0


def cpu_count() -> int:
    return os.cpu_count() or 1
