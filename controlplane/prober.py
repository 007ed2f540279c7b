"""Active health probing of workers (the leader's job): one grpc.health.v1 Watch stream per
model and one for the whole worker, over one channel per worker.

A killed process breaks every stream at once (the connection resets), so it is seen within
milliseconds; a NOT_SERVING model is pushed by the worker's health service. A hung or
partitioned host that keeps its connection open is covered by its lease expiring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.backoff import Backoff
from modelyard.channels import aio_channel
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait
from modelyard_server.workerinfo import WorkerHealth, WorkerInfo

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
HealthListener = Callable[[str, WorkerHealth], None]
#: between probes of an unreachable worker; one that answered before is retried soonest
PROBE_RETRY = Backoff(initial=0.1, cap=2.0)


class WorkerProber:
    def __init__(
        self,
        info: WorkerInfo,
        registration: int,
        on_health: HealthListener,
        *,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff = PROBE_RETRY,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.info = info
        self._interceptors = interceptors
        self._credentials = credentials  # TLS to the workers; plaintext when None
        self.registration = registration
        self._on_health = on_health
        self._clock = clock
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None
        self._last: WorkerHealth | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"probe-{self.info.worker_id}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        retry = self._backoff.counter(clock=self._clock)
        while True:
            answered = False
            try:
                answered = await self._probe()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                log.info("worker %s unreachable: %s", self.info.worker_id, error.code().name)
            except Exception:
                log.exception("probing worker %s failed", self.info.worker_id)
            self._report(reachable=False, statuses={})
            if answered:  # it answered before dropping, so it is probably restarting
                retry.reset()
            await retry.wait()

    async def _probe(self) -> bool:
        """Watches until a stream fails; returns whether the worker ever answered."""
        names = ["", *(m.name for m in self.info.models)]
        statuses: dict[str, bool] = {}
        channel = aio_channel(
            self.info.address, credentials=self._credentials, interceptors=self._interceptors
        )
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watches = [
                asyncio.create_task(self._watch(stub, name, statuses, len(names))) for name in names
            ]
            try:
                # The first stream to fail means the worker is gone (or restarting).
                done, _ = await asyncio.wait(watches, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None and statuses:
                        log.info(
                            "worker %s stopped answering: %s", self.info.worker_id, task.exception()
                        )
                        return True
                    task.result()
            finally:
                for task in watches:
                    task.cancel()
                await asyncio.gather(*watches, return_exceptions=True)
        return bool(statuses)

    async def _watch(
        self,
        stub: health_pb2_grpc.HealthStub,
        name: str,
        statuses: dict[str, bool],
        expected: int,
    ) -> None:
        async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=name)):
            statuses[name] = reply.status == SERVING
            if len(statuses) == expected:  # report once every stream has answered
                self._report(reachable=True, statuses=statuses)

    def _report(self, *, reachable: bool, statuses: dict[str, bool]) -> None:
        whole = statuses.get("", False)
        models = {
            m.name: reachable and whole and statuses.get(m.name, False) for m in self.info.models
        }
        health = WorkerHealth(
            reachable=reachable,
            models=models,
            observed_at=time.time(),
            registration=self.registration,
        )
        last = self._last
        if last is not None and (last.reachable, last.models) == (reachable, models):
            return
        self._last = health
        self._on_health(self.info.worker_id, health)


class ProberPool:
    """One prober per registered worker, restarted when its registration changes.
    `interceptors` go on the probes' channels."""

    def __init__(
        self,
        on_health: HealthListener,
        *,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff = PROBE_RETRY,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._on_health = on_health
        self._clock = clock
        self._backoff = backoff
        self._interceptors = interceptors
        self._credentials = credentials  # TLS to the workers; plaintext when None
        self._probers: dict[str, WorkerProber] = {}

    async def ensure(self, info: WorkerInfo, registration: int) -> None:
        current = self._probers.get(info.worker_id)
        if current is not None and (current.info, current.registration) == (info, registration):
            return
        await self.stop(info.worker_id)
        prober = WorkerProber(
            info,
            registration,
            self._on_health,
            clock=self._clock,
            backoff=self._backoff,
            interceptors=self._interceptors,
            credentials=self._credentials,
        )
        self._probers[info.worker_id] = prober
        prober.start()

    async def stop(self, worker_id: str) -> None:
        prober = self._probers.pop(worker_id, None)
        if prober is not None:
            await prober.stop()

    async def stop_all(self) -> None:
        for worker_id in list(self._probers):
            await self.stop(worker_id)
