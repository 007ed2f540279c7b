"""modelyard.v1.WorkerLoad over gRPC: the service's load feed (`WorkerService.load_feed`,
which paces it), one protobuf report per load it yields."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from modelyard.times import duration, seconds
from modelyard.v1 import load_pb2 as pb
from modelyard.v1 import load_pb2_grpc
from workers.service import Load, WorkerService

Context = grpc.aio.ServicerContext[Any, Any]


class WorkerLoadServicer(load_pb2_grpc.WorkerLoadServicer):
    def __init__(self, service: WorkerService, worker_id: str) -> None:
        self._service = service
        self._worker_id = worker_id

    async def WatchLoad(
        self, request: pb.WatchLoadRequest, context: Context
    ) -> AsyncIterator[pb.WatchLoadResponse]:
        interval = seconds(request.interval)
        feed_of = self._service.load_feed(interval if interval > 0 else None)
        # closed with this stream, however it ends (a client that goes away closes it at
        # its `yield`), so the feed stops at once rather than when it is collected
        async with contextlib.aclosing(feed_of) as feed:
            async for load in feed:
                yield self._report(load)

    def _report(self, load: Load) -> pb.WatchLoadResponse:
        return pb.WatchLoadResponse(
            worker_id=self._worker_id,
            in_flight=load.in_flight,
            queue_depth=load.queue_depth,
            latency=duration(load.latency_ms / 1000.0),
            model_in_flight=load.model_in_flight,
            draining=load.draining,
        )
