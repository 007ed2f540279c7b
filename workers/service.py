"""The worker's core, free of gRPC: checks a call, routes it to its model, tracks in-flight
work for draining, and paces the load feeds. The servicers in `workers.servicer` and
`workers.load_servicer` only translate to and from protobuf.

Each call's span (the tracing interceptor's, current while the call runs) gets the model,
its device, and for generation the time to the first chunk and the token counts
(`workers.call_attributes`).

Two things refuse new calls: an admin's drain (`set_draining`, reversible, the process keeps
running) and shutdown (`drain`, one-way). They are kept apart so undraining can never
reopen a worker that is shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from modelyard.clock import SYSTEM_CLOCK, Clock, wait_within
from modelyard.errors import Reason, Unavailable
from modelyard.model import Outputs, Request
from modelyard.names import check_name
from modelyard.signature import check_inputs, check_text_size, resolve_parameters
from workers.call_attributes import record_call, record_first_chunk, record_usage
from workers.metrics import WorkerMetrics
from workers.registry import ModelEntry, ModelRegistry, ModelState

#: Weight of the newest call in the latency average: about the last ten calls count.
LATENCY_WEIGHT = 0.2
#: A load feed's beat while nothing changes, unless its subscriber asks for another.
DEFAULT_LOAD_INTERVAL = 1.0
#: The tightest beat a subscriber gets: asking for a tighter one is the caller's bug.
MIN_LOAD_INTERVAL = 0.05
#: After any report the next waits at least this long, so a worker taking thousands of
#: calls a second sends at most ~50 reports a second per subscriber.
COALESCE_SECONDS = 0.02


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
        self,
        registry: ModelRegistry,
        metrics: WorkerMetrics,
        tags: Mapping[str, str],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tags = dict(tags)
        self.load_changed = Pulse()
        self._clock = clock
        #: Load feeds open now: one per subscriber (a control-plane replica, usually).
        self.load_feeds = 0
        self._feeds_closed = False
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

    async def load_feed(self, interval: float | None = None) -> AsyncGenerator[Load, None]:
        """The load at once, then every `interval` seconds (default `DEFAULT_LOAD_INTERVAL`,
        at least `MIN_LOAD_INTERVAL`) while nothing changes, and soon after each change of
        in-flight work, so balancers see a burst as it starts. Changes are coalesced: after
        any report the next waits at least `COALESCE_SECONDS`. Ends at shutdown (`drain`).
        """
        beat = max(interval or DEFAULT_LOAD_INTERVAL, MIN_LOAD_INTERVAL)
        self.load_feeds += 1
        try:
            while not self._feeds_closed:
                seen = self.load_changed.count  # before reading: a change meanwhile counts
                yield self.load()
                sent = self._clock.now()
                await self._within(self.load_changed.wait(seen), beat)
                await self._clock.sleep(max(0.0, sent + COALESCE_SECONDS - self._clock.now()))
        finally:
            self.load_feeds -= 1

    async def _within(self, waiting: Awaitable[object], timeout: float) -> bool:
        """Waits for `waiting`, at most `timeout` seconds on the service's clock; whether it
        finished in time."""
        try:
            await wait_within(self._clock, timeout, waiting)
        except TimeoutError:
            return False
        return True

    def prepare(
        self, model: str, inputs: Mapping[str, Any], overrides: Mapping[str, Any]
    ) -> tuple[ModelEntry, Request]:
        """Finds a serving model and checks a request against its signature."""
        if self.draining:
            raise Unavailable(
                "this worker is draining and accepts no new calls; use another",
                reason=Reason.WORKER_DRAINING,
            )
        entry = self.registry.get(check_name("model", model))
        if entry.state is ModelState.LOADING:
            raise Unavailable(
                f"model '{model}' is still loading; retry shortly",
                reason=Reason.MODEL_LOADING,
                metadata={"model": model},
            )
        if entry.state is ModelState.FAILED or entry.model is None:
            raise Unavailable(
                f"model '{model}' failed to load: {entry.reason}",
                reason=Reason.MODEL_FAILED,
                metadata={"model": model},
            )
        check_text_size(inputs, entry.config.max_input_chars)
        checked = check_inputs(entry.model.inputs, inputs)
        parameters = resolve_parameters(entry.model.parameters, entry.default_parameters, overrides)
        return entry, Request(checked, parameters)

    async def predict(self, entry: ModelEntry, request: Request) -> Outputs:
        span = trace.get_current_span()
        record_call(span, model=entry.name, device=entry.device)
        self._enter(entry)
        started = self._clock.now()
        try:
            outputs = await entry.runner.predict(request)
        finally:
            self._leave(entry, started)
        record_usage(span, outputs)
        return outputs

    async def predict_stream(
        self, entry: ModelEntry, request: Request
    ) -> AsyncGenerator[tuple[bool, Outputs], None]:
        span = trace.get_current_span()  # the call's, taken now: not current across yields
        record_call(span, model=entry.name, device=entry.device)
        self._enter(entry)
        started = self._clock.now()
        first = True
        try:
            # closed with this one, in the same task (see workers.servicer)
            async with contextlib.aclosing(entry.runner.predict_stream(request)) as stream:
                async for final, outputs in stream:
                    if first:
                        record_first_chunk(span, self._clock.now() - started)
                        first = False
                    if final:
                        record_usage(span, outputs)
                    yield final, outputs
        finally:
            self._leave(entry, started)

    def _enter(self, entry: ModelEntry) -> None:
        self._in_flight += 1
        self._model_in_flight[entry.name] += 1
        self._idle.clear()
        self.metrics.in_flight.labels(entry.name).inc()
        self.load_changed.fire()

    def _leave(self, entry: ModelEntry, started: float) -> None:
        elapsed = self._clock.now() - started
        self._in_flight -= 1
        self._model_in_flight[entry.name] -= 1
        if self._in_flight == 0:
            self._idle.set()
        if self._latency is None:
            self._latency = elapsed
        else:
            self._latency += LATENCY_WEIGHT * (elapsed - self._latency)
        self.metrics.in_flight.labels(entry.name).dec()
        self.load_changed.fire()

    async def drain(self, grace: float) -> bool:
        """Shutdown: refuses new calls for good, waits up to `grace` seconds for in-flight
        ones, then ends the load feeds (they report the drain meanwhile; once ended, they do
        not hold up the server's stop). Returns whether everything in flight finished.
        """
        self._stopping = True
        self.load_changed.fire()
        try:
            return await self._within(self._idle.wait(), grace)
        finally:
            self._feeds_closed = True
            self.load_changed.fire()  # wakes the feeds, which then see `_feeds_closed`
