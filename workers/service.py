"""The worker's core, free of gRPC: checks a call, routes it to its model, tracks in-flight
work for draining and load reports. The servicers in `workers.servicer` and
`workers.load_servicer` only translate to and from protobuf.

Two things refuse new calls: an admin's drain (`set_draining`, reversible, the process keeps
running) and shutdown (`drain`, one-way). They are kept apart so undraining can never
reopen a worker that is shutting down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.errors import Unavailable
from modelyard.model import Outputs, Request
from modelyard.signature import check_inputs, resolve_parameters
from workers.metrics import WorkerMetrics
from workers.registry import ModelEntry, ModelRegistry, ModelState

#: Weight of the newest call in the latency average: about the last ten calls count.
LATENCY_WEIGHT = 0.2


@dataclass(frozen=True)
class Load:
    """How busy the worker is right now."""

    in_flight: int
    queue_depth: int  # requests waiting for a batch or a model thread
    latency_ms: float  # exponentially weighted mean of finished calls
    model_in_flight: dict[str, int]
    draining: bool


class Pulse:
    """Wakes everyone waiting at each `fire`. `count` lets a waiter that was busy elsewhere
    notice that it missed one, so no change goes unreported."""

    def __init__(self) -> None:
        self.count = 0
        self._fired: asyncio.Future[None] | None = None

    def fire(self) -> None:
        # On the call path: a counter and, only when someone waits, one future.
        self.count += 1
        if self._fired is not None:
            if not self._fired.done():
                self._fired.set_result(None)
            self._fired = None

    async def wait(self, seen: int) -> None:
        """Returns once `count` differs from `seen`."""
        if self.count != seen:
            return
        if self._fired is None:
            self._fired = asyncio.get_running_loop().create_future()
        # shielded: one waiter's cancellation must not cancel the future the others share
        await asyncio.shield(self._fired)


class WorkerService:
    def __init__(
        self, registry: ModelRegistry, metrics: WorkerMetrics, tags: Mapping[str, str]
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tags = dict(tags)
        self.load_changed = Pulse()
        self._drained = False  # by an admin, through etcd
        self._stopping = False  # by shutdown; never undone
        self._in_flight = 0
        self._model_in_flight = dict.fromkeys(registry.names, 0)
        self._latency: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def draining(self) -> bool:
        """Whether new calls are refused (drained by an admin, or shutting down)."""
        return self._drained or self._stopping

    def set_draining(self, draining: bool) -> None:
        """An admin's drain: refuse new calls while in-flight ones finish, or accept again.

        Calls already accepted run to completion either way.
        """
        if draining != self._drained:
            self._drained = draining
            self.load_changed.fire()

    def load(self) -> Load:
        return Load(
            in_flight=self._in_flight,
            queue_depth=sum(e.runner.queue_depth for e in self.registry.entries()),
            latency_ms=(self._latency or 0.0) * 1000.0,
            model_in_flight=dict(self._model_in_flight),
            draining=self.draining,
        )

    def prepare(
        self, model: str, inputs: Mapping[str, Any], overrides: Mapping[str, Any]
    ) -> tuple[ModelEntry, Request]:
        """Finds a serving model and checks a request against its signature."""
        if self.draining:
            raise Unavailable("this worker is draining and accepts no new calls; use another")
        entry = self.registry.get(model)
        if entry.state is ModelState.LOADING:
            raise Unavailable(f"model '{model}' is still loading; retry shortly")
        if entry.state is ModelState.FAILED or entry.model is None:
            raise Unavailable(f"model '{model}' failed to load: {entry.reason}")
        checked = check_inputs(entry.model.inputs, inputs)
        parameters = resolve_parameters(entry.model.parameters, entry.default_parameters, overrides)
        return entry, Request(checked, parameters)

    async def predict(self, entry: ModelEntry, request: Request) -> Outputs:
        self._enter(entry)
        started = time.monotonic()
        try:
            return await entry.runner.predict(request)
        finally:
            self._leave(entry, started)

    async def predict_stream(
        self, entry: ModelEntry, request: Request
    ) -> AsyncIterator[tuple[bool, Outputs]]:
        self._enter(entry)
        started = time.monotonic()
        try:
            async for item in entry.runner.predict_stream(request):
                yield item
        finally:
            self._leave(entry, started)

    def _enter(self, entry: ModelEntry) -> None:
        self._in_flight += 1
        self._model_in_flight[entry.name] += 1
        self._idle.clear()
        self.metrics.in_flight.labels(entry.name).inc()
        self.load_changed.fire()

    def _leave(self, entry: ModelEntry, started: float) -> None:
        elapsed = time.monotonic() - started
        self._in_flight -= 1
        self._model_in_flight[entry.name] -= 1
        if self._in_flight == 0:
            self._idle.set()
        if self._latency is None:
            self._latency = elapsed
        else:
            self._latency += LATENCY_WEIGHT * (elapsed - self._latency)
        self.metrics.in_flight.labels(entry.name).dec()
        self.metrics.latency.labels(entry.name).observe(elapsed)
        self.load_changed.fire()

    async def drain(self, grace: float) -> bool:
        """Shutdown: refuses new calls for good and waits up to `grace` seconds for in-flight
        ones. Returns whether everything in flight finished.
        """
        self._stopping = True
        self.load_changed.fire()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True
