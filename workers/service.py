"""The worker's core, free of gRPC: checks a call, routes it to its model, tracks in-flight
work for draining. The servicer in `workers.servicer` only translates to and from protobuf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from modelyard.errors import Unavailable
from modelyard.model import Outputs, Request
from modelyard.signature import check_inputs, resolve_parameters
from workers.metrics import WorkerMetrics
from workers.registry import ModelEntry, ModelRegistry, ModelState


class WorkerService:
    def __init__(
        self, registry: ModelRegistry, metrics: WorkerMetrics, tags: Mapping[str, str]
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tags = dict(tags)
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

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
        self._idle.clear()
        self.metrics.in_flight.labels(entry.name).inc()

    def _leave(self, entry: ModelEntry, started: float) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        self.metrics.in_flight.labels(entry.name).dec()
        self.metrics.latency.labels(entry.name).observe(time.monotonic() - started)

    async def drain(self, grace: float) -> bool:
        """Refuses new calls and waits up to `grace` seconds for in-flight ones.

        Returns whether everything in flight finished.
        """
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True
