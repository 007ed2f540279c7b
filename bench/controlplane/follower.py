"""The endpoint stream as subscribers see it: a timestamping follower, and raw extra
subscribers that only add load.

Timestamps are `time.monotonic()` (CLOCK_MONOTONIC, one clock for all processes), so a
change made at t0 by the bench or a fake is matched with the first set received after t0
that reflects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc.aio

from bench.common.errors import BenchError
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc


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
