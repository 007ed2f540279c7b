"""controlplane_cost: the control plane's core at 100, 1,000 and 5,000 workers, in process.

The real informer caches (plain dicts, as the informers hold them), view, reconciler, work
queue, hub and WatchEndpoints servicer; only etcd writes, probers and load feeds are
no-ops, and each subscriber is the servicer's own stream driven here and serialized as gRPC
would. What it isolates is the cost of the control plane's own work, which the scale
scenario (real processes, 1,000 fake workers, one machine) mixes with etcd, the fakes and
the probers:

- cold start: the informers have listed N workers (every key queued, `synced` set, 100
  subscribers waiting): until every subscriber holds the full set of N;
- changes: one worker drained or undrained at a time; until every subscriber's stream has
  yielded a set that reflects it (p50/p99 over all subscriber arrivals);
- work per change: how many sets were computed and messages built per change (the goal:
  one per changed (model, selector), however many workers and subscribers).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench.common.stats import latency_summary
from bench.controlplane.run import Run
from controlplane.admin import Admin
from controlplane.api_view import ApiView
from controlplane.hub import EndpointHub
from controlplane.reconciler import Reconciler
from controlplane.registrations import RegistrationAdmin
from controlplane.servicer import ControlPlaneServicer
from controlplane.view import ClusterView
from controlplane.workqueue import WorkQueue, run_controller
from modelyard.endpoints import Load
from modelyard.v1 import controlplane_pb2 as pb
from modelyard_server.aio import cancel_and_wait
from modelyard_server.etcd import Keys
from modelyard_server.informer import Entry
from modelyard_server.workerinfo import DesiredWorker, ModelInfo, WorkerHealth, WorkerInfo

MODEL = "fleet"
CHANGE_GOAL_MS = 50.0  # at 1,000 workers, 100 subscribers
COLD_START_GOAL_S = 2.0  # at 1,000 workers
GOAL_WORKERS = 1000
CHANGE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sizes:
    workers: tuple[int, ...]
    subscribers: int
    changes: int


FULL = Sizes((100, 1000, 5000), 100, 100)
SMOKE = Sizes((20, 50), 5, 4)


class _NoStore:
    async def get(self, key: bytes) -> None:
        return None

    async def put(self, key: bytes, value: bytes) -> object:
        return None

    async def replace(self, key: bytes, initial_value: bytes, new_value: bytes) -> bool:
        return False

    async def delete(self, key: bytes) -> object:
        return None


class _NoFeeds:
    async def ensure(self, worker_id: str, address: str) -> None:
        return None

    async def stop(self, worker_id: str) -> None:
        return None


class _NoProbers:
    async def ensure(self, info: WorkerInfo, registration: int) -> None:
        return None

    async def stop(self, worker_id: str) -> None:
        return None


class _Counted:
    """Counts calls of `function` (the view's set computation)."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.function(*args)


class Core:
    """One control plane's core over caches holding `workers` registrations of MODEL."""

    def __init__(self, workers: int) -> None:
        self.workers: dict[str, Entry[WorkerInfo]] = {}
        self.desired: dict[str, Entry[DesiredWorker]] = {}
        health: dict[str, Entry[WorkerHealth]] = {}
        loads: dict[str, Load] = {}
        for n in range(workers):
            worker_id = f"fake-{n:05d}"
            info = WorkerInfo(
                worker_id=worker_id,
                address=f"127.0.0.1:{20000 + n}",
                models=(ModelInfo(name=MODEL),),
                tags={"zone": "a" if n % 2 else "b"},
            )
            self.workers[worker_id] = Entry(info, n + 1, n + 1)
        self.revision = workers + 1
        self.view = ClusterView(self.workers, self.desired, health, loads)
        self.compute = _Counted(self.view.endpoints)
        self.hub = EndpointHub(self.compute)
        self.queue = WorkQueue()
        self.reconciler = Reconciler(
            view=self.view,
            store=_NoStore(),
            keys=Keys(),
            probers=_NoProbers(),
            loads=_NoFeeds(),
            hub=self.hub,
            is_leader=lambda: True,
        )
        self.synced = asyncio.Event()
        self.servicer = ControlPlaneServicer(
            Admin(self.view, _NoStore(), Keys()),
            self.hub,
            "bench",
            lambda: True,
            self.synced,
            registrations=RegistrationAdmin(ApiView({}, {}), _NoStore(), Keys()),
        )

    def toggle_drain(self, worker_id: str) -> None:
        """What the desired-state informer does on a drain or undrain, then its handler."""
        self.revision += 1
        if worker_id in self.desired:
            del self.desired[worker_id]
        else:
            self.desired[worker_id] = Entry(DesiredWorker(drain=True), self.revision, self.revision)
        self.queue.add(worker_id)


class Subscriber:
    """A WatchEndpoints stream as a composer holds it: every message serialized (what gRPC
    does per stream) and its arrival time and size of set kept."""

    def __init__(self, stream: AsyncIterator[pb.WatchEndpointsResponse]) -> None:
        self.stream = stream
        self.sizes: list[tuple[float, int]] = []
        self.changed = asyncio.Event()
        # the messages of the current change, kept alive so that their ids stay distinct
        self.messages: list[pb.WatchEndpointsResponse] = []

    async def read(self) -> None:
        async for message in self.stream:
            message.SerializeToString()
            self.sizes.append((time.monotonic(), len(message.endpoints)))
            self.messages.append(message)
            self.changed.set()

    async def until_size(self, size: int, since: float) -> float:
        """When the first set of `size` arrived after `since`."""
        while True:
            for at, got in self.sizes:
                if at >= since and got == size:
                    return at
            self.changed.clear()
            await self.changed.wait()


async def measure(workers: int, sizes: Sizes) -> dict[str, Any]:
    core = Core(workers)
    subscribers = [
        Subscriber(core.servicer.WatchEndpoints(pb.WatchEndpointsRequest(model=MODEL), None))  # type: ignore[arg-type]
        for _ in range(sizes.subscribers)
    ]
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(s.read()) for s in subscribers]
    try:
        await asyncio.sleep(0)  # every stream is waiting for the sync
        began = time.monotonic()
        for worker_id in core.workers:  # the informers' listing enqueues every key
            core.queue.add(worker_id)
        core.synced.set()
        tasks.append(loop.create_task(run_controller(core.queue, core.reconciler.reconcile)))
        arrivals = await asyncio.wait_for(
            asyncio.gather(*(s.until_size(workers, began) for s in subscribers)),
            CHANGE_TIMEOUT_S * 4,
        )
        cold_start_s = max(arrivals) - began
        gc.freeze()  # as the control plane does once synced (controlplane/server.py)
        latencies, computes, messages = await changes(core, subscribers, sizes.changes)
    finally:
        for task in tasks:
            await cancel_and_wait(task)
        gc.unfreeze()
    return {
        "workers": workers,
        "subscribers": sizes.subscribers,
        "cold_start_s": round(cold_start_s, 3),
        "changes": latency_summary(latencies),
        "sets_computed_per_change": computes,
        "messages_built_per_change": messages,
    }


async def changes(
    core: Core, subscribers: list[Subscriber], count: int
) -> tuple[list[float], float, float]:
    """Drains the first `count / 2` workers one at a time, then undrains them: each until
    every subscriber saw it. Returns every subscriber's latency (ms), and per change the
    sets computed and the distinct messages the subscribers received."""
    ids = list(core.workers)[: max(1, count // 2)]
    latencies: list[float] = []
    computes = core.compute.calls
    messages = 0
    expected = len(core.workers)
    for worker_id in ids + ids:
        for subscriber in subscribers:  # only this change's arrivals are looked at
            subscriber.sizes.clear()
            subscriber.messages.clear()
        expected += 1 if worker_id in core.desired else -1
        t0 = time.monotonic()
        core.toggle_drain(worker_id)
        arrivals = await asyncio.wait_for(
            asyncio.gather(*(s.until_size(expected, t0) for s in subscribers)), CHANGE_TIMEOUT_S
        )
        latencies.extend(1000.0 * (at - t0) for at in arrivals)
        messages += len({id(m) for s in subscribers for m in s.messages})
    made = 2 * len(ids)
    return latencies, round((core.compute.calls - computes) / made, 2), round(messages / made, 2)


def verdicts(curve: list[dict[str, Any]]) -> dict[str, bool]:
    at_goal = next((point for point in curve if point["workers"] == GOAL_WORKERS), curve[-1])
    return {
        f"change_p99_le_{CHANGE_GOAL_MS:g}ms": at_goal["changes"]["p99_ms"] <= CHANGE_GOAL_MS,
        f"cold_start_le_{COLD_START_GOAL_S:g}s": at_goal["cold_start_s"] <= COLD_START_GOAL_S,
        # O(changed sets): one set and one message per change at every size
        "one_set_per_change": all(p["sets_computed_per_change"] <= 1.0 for p in curve),
        "one_message_per_change": all(p["messages_built_per_change"] <= 1.0 for p in curve),
    }


async def cost(run: Run) -> None:
    sizes = SMOKE if run.smoke else FULL
    await curve_of(run, sizes)


async def curve_of(run: Run, sizes: Sizes) -> None:
    curve = []
    for workers in sizes.workers:
        await run.calm()
        curve.append(await measure(workers, sizes))
    checks = verdicts(curve)
    sizes_text = ", ".join(f"{n:,}" for n in sizes.workers)
    run.recorder.emit(
        {
            "bench": "controlplane_cost",
            "scenario": f"the control plane's core in process at {sizes_text} workers with "
            f"{sizes.subscribers} subscribers",
            "goal": f"at {GOAL_WORKERS:,} workers and {sizes.subscribers} subscribers: a change "
            f"reaches every subscriber with p99 <= {CHANGE_GOAL_MS:g} ms, a cold start serves "
            f"every worker in <= {COLD_START_GOAL_S:g} s; one set and one message per change",
            "baseline": "before: every reconcile recomputed every subscription's set and "
            "encoded it per subscriber (bench/README.md, finding 4)",
            "curve": curve,
            "checks": checks,
            "pass": all(checks.values()),
        }
    )
