"""modelyard.v1.WorkerLoad over gRPC: a live feed of how busy this worker is.

A report goes out at once, then every `interval_ms` while nothing changes, and soon after
each change of in-flight work, so balancers see a burst as it starts. Changes are
coalesced: after any report the next waits at least `COALESCE_SECONDS`, so a worker taking
thousands of calls a second sends at most ~50 reports a second per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from modelyard.v1 import load_pb2 as pb
from modelyard.v1 import load_pb2_grpc
from workers.service import WorkerService

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 50
COALESCE_SECONDS = 0.02


class WorkerLoadServicer(load_pb2_grpc.WorkerLoadServicer):
    def __init__(self, service: WorkerService, worker_id: str) -> None:
        self._service = service
        self._worker_id = worker_id
        self._closing = False
        #: Feeds being served now (a gauge of subscribers; tests check none is left over).
        self.streams = 0

    def close(self) -> None:
        """Ends every feed, so shutdown does not wait out its grace period on them."""
        self._closing = True
        self._service.load_changed.fire()  # wakes the feeds, which then see `_closing`

    async def WatchLoad(
        self, request: pb.WatchLoadRequest, context: Context
    ) -> AsyncIterator[pb.WatchLoadResponse]:
        asked = request.interval_ms if request.interval_ms > 0 else DEFAULT_INTERVAL_MS
        interval = max(asked, MIN_INTERVAL_MS) / 1000.0  # a tighter beat is the caller's bug
        changes = self._service.load_changed
        loop = asyncio.get_running_loop()
        self.streams += 1
        try:
            # A client that goes away cancels this generator at its current await.
            while not self._closing:
                seen = changes.count  # before reading: a change during the send is not lost
                yield self._report()
                sent = loop.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await changes.wait(seen)
                await asyncio.sleep(max(0.0, sent + COALESCE_SECONDS - loop.time()))
        finally:
            self.streams -= 1

    def _report(self) -> pb.WatchLoadResponse:
        load = self._service.load()
        return pb.WatchLoadResponse(
            worker_id=self._worker_id,
            in_flight=load.in_flight,
            queue_depth=load.queue_depth,
            latency_ms=load.latency_ms,
            model_in_flight=load.model_in_flight,
            draining=load.draining,
        )
