"""One run of the control-plane bench, and the cluster pieces its scenarios share: a
control plane on a fresh etcd, SlowEcho workers registered under short leases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.errors import BenchError
from bench.common.load.driver import Level
from bench.common.quiet import Quiet
from bench.common.results import Recorder
from bench.common.servers import (
    Command,
    Server,
    controlplane,
    start,
    stop,
    stop_all,
    worker,
    write_worker_config,
)
from bench.controlplane.follower import Arrival, SetFollower
from modelyard_cli.etcd_server import EtcdServer, free_port

SLOW_ECHO = "tests.support.models:SlowEcho"


@dataclass
class Run:
    workdir: Path
    output: Path
    profile: str = "auto"  # auto | always | never
    rounds: int = 2
    gc_freeze: bool = False  # the scale scenario's what-if
    # smoke: every scenario once, small: a handful of calls, a small fleet
    smoke: bool = False
    # waits for a calm machine, never repeats (a repeated churn would not be the same one)
    quiet: Quiet = field(default_factory=lambda: Quiet(budget_s=20.0, max_attempts=1))
    recorder: Recorder = field(default_factory=Recorder)

    def level(self, level: Level) -> Level:
        return level.smoke() if self.smoke else level

    async def calm(self) -> None:
        await asyncio.to_thread(self.quiet.wait_for_calm)


@contextlib.contextmanager
def control_plane(
    etcd: EtcdServer, workdir: Path, name: str, command: Command | None = None
) -> Iterator[Server]:
    server = start(name, command or controlplane(etcd.endpoint), workdir)
    try:
        yield server
    finally:
        stop(server)


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    delay_ms: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Worker:
    spec: WorkerSpec
    server: Server
    metrics_port: int


def slow_echo_config(
    workdir: Path, spec: WorkerSpec, etcd_endpoint: str, model: str, metrics_port: int
) -> Path:
    """A worker serving SlowEcho unbatched (so `delay_ms` is paid per call), registered in
    etcd under a 2 s lease with a fixed id, and a Prometheus port to count its calls."""
    models = [
        {
            "name": model,
            "class": SLOW_ECHO,
            "options": {"delay_ms": spec.delay_ms},
            "batching": {"max_batch_size": 1},
        }
    ]
    return write_worker_config(
        workdir / f"{spec.worker_id}.yaml",
        models,
        worker_id=spec.worker_id,
        etcd={"endpoints": [etcd_endpoint]},
        lease_ttl=2,
        tags=spec.tags,
        metrics_port=metrics_port,
    )


async def start_workers(
    stack: contextlib.ExitStack,
    etcd: EtcdServer,
    workdir: Path,
    model: str,
    specs: list[WorkerSpec],
) -> dict[str, Worker]:
    """Starts the workers side by side (each takes ~2 s to import and load); every one
    that started is stopped by `stack` (side by side too), even when another failed."""
    servers: list[Server] = []
    stack.callback(stop_all, servers)

    def launch(spec: WorkerSpec) -> Worker:
        metrics_port = free_port()  # a worker reports no bound metrics port: pick one
        config = slow_echo_config(workdir, spec, etcd.endpoint, model, metrics_port)
        server = start(spec.worker_id, worker(config), workdir)
        servers.append(server)
        return Worker(spec, server, metrics_port)

    started = await asyncio.gather(
        *(asyncio.to_thread(launch, spec) for spec in specs), return_exceptions=True
    )
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome
    return {w.spec.worker_id: w for w in started if isinstance(w, Worker)}


async def require_members(follower: SetFollower, ids: set[str], timeout: float) -> Arrival:
    """Waits until the control plane's set holds exactly `ids` (workers register a moment
    after they serve)."""
    arrival = await follower.wait_for(lambda got: got == ids, 0, timeout)
    if arrival is None:
        raise BenchError(
            f"endpoint set never became {sorted(ids)} within {timeout:g} s; "
            f"last: {sorted(follower.latest)}"
        )
    return arrival
