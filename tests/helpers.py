"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc.aio
import httpx

from modelyard.v1 import controlplane_pb2 as pb
from modelyard.v1 import controlplane_pb2_grpc


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits until `predicate()` holds; fails the test if it does not within `timeout`."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  (state outside asyncio: nothing to await)
            await asyncio.sleep(0.005)


class EndpointFollower:
    """Follows one WatchEndpoints stream (as a composer does) and keeps the latest set."""

    def __init__(self, address: str, model: str, selector: str = "") -> None:
        self.channel = grpc.aio.insecure_channel(address)
        stub = controlplane_pb2_grpc.ControlPlaneStub(self.channel)
        self.call = stub.WatchEndpoints(pb.WatchEndpointsRequest(model=model, selector=selector))
        self.latest: pb.WatchEndpointsResponse | None = None
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for reply in self.call:
            self.latest = reply

    def ids(self) -> list[str]:
        return [e.worker_id for e in self.latest.endpoints] if self.latest else []

    async def until(self, ids: list[str], timeout: float = 5.0) -> float:
        """Seconds until the set is `ids`; fails after `timeout`. The default is generous
        (a busy host is slow, not wrong): a test about speed passes its own bound."""
        started = time.monotonic()
        await eventually(lambda: self.ids() == ids, timeout)
        return time.monotonic() - started

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def leave_a_chat_stream(
    http: httpx.AsyncClient, body: Mapping[str, Any], *, after_events: int = 3
) -> None:
    """Streams POST /chat/completions and closes the connection after `after_events`
    server-sent events: a client that leaves in the middle of an answer."""
    async with http.stream("POST", "/chat/completions", json=body) as response:
        events = 0
        async for line in response.aiter_lines():
            events += line.startswith("data: ")
            if events == after_events:
                return
