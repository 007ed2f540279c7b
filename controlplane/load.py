"""Load feeds: every control-plane replica follows each worker's WorkerLoad/WatchLoad stream
and keeps the latest report in memory. Load is high-rate and rebuildable, so it never
touches etcd; a restarted replica simply subscribes again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
import grpc.aio

from modelyard.backoff import Backoff
from modelyard.channels import aio_channel
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoints import Load
from modelyard.times import duration, seconds
from modelyard.v1 import load_pb2, load_pb2_grpc
from modelyard_server.aio import cancel_and_wait

log = logging.getLogger(__name__)

#: between attempts to reach a worker's load stream
FEED_RETRY = Backoff(initial=0.2, cap=5.0)


class LoadFeedPool:
    """One load feed per registered worker; `loads` holds each one's latest report.
    `interceptors` go on the feeds' channels."""

    def __init__(
        self,
        interval_ms: int = 1000,
        *,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff = FEED_RETRY,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.loads: dict[str, Load] = {}
        self._interceptors = interceptors
        self._credentials = credentials  # TLS to the workers; plaintext when None
        self._interval_ms = interval_ms
        self._clock = clock
        self._backoff = backoff
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}

    async def ensure(self, worker_id: str, address: str) -> None:
        current = self._tasks.get(worker_id)
        if current is not None and current[0] == address:
            return
        await self.stop(worker_id)
        task = asyncio.get_running_loop().create_task(
            self._follow(worker_id, address), name=f"load-{worker_id}"
        )
        self._tasks[worker_id] = (address, task)

    async def stop(self, worker_id: str) -> None:
        current = self._tasks.pop(worker_id, None)
        self.loads.pop(worker_id, None)
        if current is not None:
            await cancel_and_wait(current[1])

    async def stop_all(self) -> None:
        for worker_id in list(self._tasks):
            await self.stop(worker_id)

    async def _follow(self, worker_id: str, address: str) -> None:
        retry = self._backoff.counter(clock=self._clock)
        request = load_pb2.WatchLoadRequest(interval=duration(self._interval_ms / 1000.0))
        while True:
            try:
                channel = aio_channel(
                    address, credentials=self._credentials, interceptors=self._interceptors
                )
                async with channel:
                    stub = load_pb2_grpc.WorkerLoadStub(channel)
                    async for report in stub.WatchLoad(request):
                        retry.reset()
                        self.loads[worker_id] = Load(
                            report.in_flight, report.queue_depth, seconds(report.latency) * 1000.0
                        )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("worker %s reports no load; balancing on local counts", worker_id)
                    return
            except Exception:  # a bug must not end the feed silently
                log.exception("load feed of worker %s failed", worker_id)
            # an old report (say 50 in flight) would keep steering traffic away; no report
            # means balancing on the clients' own counts until the feed is back
            self.loads.pop(worker_id, None)
            await retry.wait()
