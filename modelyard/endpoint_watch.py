"""The client side of ControlPlane.WatchEndpoints: a live endpoint set for one model.

    watcher = EndpointWatcher(["cp-1:50070", "cp-2:50070"], "gpt2", on_update=balancer_update)
    watcher.start()
    first = await watcher.wait_ready(timeout=5)
    ...
    await watcher.stop()

The control plane is never on the request path, so losing it must not stop calls: when
the stream breaks (a control plane restarted, failed over, or is gone) the watcher keeps
the last set it had, and reconnects with capped exponential backoff and jitter, trying the
next address each time. It only ever passes on sets a control plane sent; an empty set
therefore means "nobody serves this model", never "the control plane is unreachable".

The watch runs in a context of its own, not its starter's: it outlives the call that
happened to start it, and must not carry that call's trace (a span lasting as long as the
watch would hang in it). `interceptors` go on its channels.

INVALID_ARGUMENT (a malformed selector) is not retried: asking again cannot fix it. It is
raised by `wait_ready`, so the caller sees the server's message naming the bad term.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Callable, Sequence

import grpc
import grpc.aio

from modelyard.backoff import Backoff
from modelyard.channels import aio_channel
from modelyard.clock import SYSTEM_CLOCK, Clock, timeout_on
from modelyard.endpoints import (
    DEFAULT_HTTP_API_TIMEOUT_S,
    Endpoint,
    EndpointSet,
    HttpApi,
    Load,
)
from modelyard.errors import InvalidArgument, ModelyardError, Unavailable
from modelyard.times import seconds
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc

log = logging.getLogger(__name__)

#: gRPC's own connection backoff shape, shorter to start
RECONNECT = Backoff(initial=0.25, cap=10.0, multiplier=1.6, jitter=0.2)


def endpoint_set_of(response: cp.WatchEndpointsResponse) -> EndpointSet:
    endpoints = tuple(
        Endpoint(
            worker_id=e.worker_id,
            address=e.address,
            tags=dict(e.tags),
            load=Load(e.load.in_flight, e.load.queue_depth, seconds(e.load.latency) * 1000.0),
            http_api=http_api_of(e.http_api) if e.HasField("http_api") else None,
            capacity=e.capacity,
        )
        for e in response.endpoints
    )
    return EndpointSet(response.model, response.version, endpoints)


def http_api_of(api: cp.HttpApi) -> HttpApi:
    return HttpApi(
        url_template=api.url_template,
        body_template=api.body_template,
        response_path=api.response_path,
        headers=dict(api.headers),
        timeout_s=seconds(api.timeout) if api.HasField("timeout") else DEFAULT_HTTP_API_TIMEOUT_S,
        health_url=api.health_url,
    )


class EndpointWatcher:
    """Watches one (model, selector) as an asyncio task; create and use it in one loop.

    `idle_timeout_s`, when set, treats a stream that sent nothing for that long as broken
    (a half-open connection otherwise looks like a quiet control plane forever). Set it
    above the control plane's periodic push interval. That timer, the reconnect backoff and
    `wait_ready`'s timeout all run on `clock`.
    """

    def __init__(
        self,
        control_plane_addresses: Sequence[str],
        model: str,
        selector: str = "",
        *,
        on_update: Callable[[EndpointSet], None],
        backoff: Backoff | None = None,
        idle_timeout_s: float | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not control_plane_addresses:
            raise InvalidArgument("at least one control plane address is needed")
        self.addresses = tuple(control_plane_addresses)
        self.model = model
        self.selector = selector
        self.backoff = backoff or RECONNECT
        self.idle_timeout_s = idle_timeout_s
        self._on_update = on_update
        self._rng = rng or random.Random()
        self._clock = clock
        self._interceptors = interceptors
        self._credentials = credentials  # TLS to the control planes; plaintext when None
        self._current: EndpointSet | None = None
        self._error: ModelyardError | None = None
        self._problem = "no answer yet"  # why the last connection failed, for messages
        self._received = 0
        self._settled = asyncio.Event()  # a first set arrived, or the watch ended for good
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> EndpointSet | None:
        """The last set a control plane sent, if any."""
        return self._current

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(),
                name=f"watch endpoints of {self.model!r}",
                context=contextvars.Context(),  # not the starter's (module docstring)
            )

    async def stop(self) -> None:
        """Ends the watch and waits for its task; the last set stays readable."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, a cancelled stop() still raises
        self._settled.set()

    async def wait_ready(self, timeout: float | None = None) -> EndpointSet:
        """The first set (or the current one); Unavailable if none came within `timeout`."""
        if self._task is None and not self._settled.is_set():
            raise RuntimeError("call start() before wait_ready()")
        if not self._settled.is_set():  # usually it is: no timer for every call that asks
            try:
                async with timeout_on(self._clock, timeout):
                    await self._settled.wait()
            except TimeoutError:
                raise Unavailable(
                    f"no endpoint set for model {self.model!r} from control plane(s) "
                    f"{', '.join(self.addresses)} within {timeout:g}s: {self._problem}"
                ) from None
        if self._current is not None:
            return self._current
        if self._error is not None:
            raise type(self._error)(self._error.message)  # a fresh one: no growing traceback
        raise Unavailable(f"the endpoint watch of model {self.model!r} was stopped")

    async def _run(self) -> None:
        retry = self.backoff.counter(rng=self._rng)  # delays only: logged, then slept on our clock
        turn = 0
        while True:
            address = self.addresses[turn % len(self.addresses)]
            turn += 1
            received = self._received
            try:
                await self._watch(address)
                self._problem = f"{address} ended the stream"
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    self._give_up(InvalidArgument(error.details() or "invalid watch request"))
                    return
                self._problem = f"{address}: {error.code().name}: {error.details()}"
            except TimeoutError:
                self._problem = f"{address} sent nothing for {self.idle_timeout_s:g}s"
            except Exception as error:  # a bug here must not silently end the watch
                log.exception("endpoint watch of %r failed unexpectedly", self.model)
                self._problem = f"{address}: {type(error).__name__}"
            if self._received > received:
                retry.reset()  # that connection worked: start the backoff afresh
            delay = retry.next()
            # the first failure after a working stream is news; the rest of an outage is not
            level = logging.WARNING if retry.attempts == 1 else logging.DEBUG
            log.log(
                level, "endpoint watch of %r: %s; retry in %.2fs", self.model, self._problem, delay
            )
            await self._clock.sleep(delay)

    async def _watch(self, address: str) -> None:
        request = cp.WatchEndpointsRequest(model=self.model, selector=self.selector)
        channel = aio_channel(
            address, credentials=self._credentials, interceptors=self._interceptors
        )
        async with channel:
            call = controlplane_pb2_grpc.ControlPlaneStub(channel).WatchEndpoints(request)
            async with timeout_on(self._clock, self.idle_timeout_s) as idle:
                async for response in call:
                    idle.restart()
                    self._received += 1
                    self._publish(endpoint_set_of(response))

    def _publish(self, endpoint_set: EndpointSet) -> None:
        if endpoint_set == self._current:
            return
        self._current = endpoint_set
        try:
            self._on_update(endpoint_set)
        except Exception:  # a consumer's bug must not end the watch everyone relies on
            log.exception("endpoint update callback failed for model %r", self.model)
        self._settled.set()

    def _give_up(self, error: ModelyardError) -> None:
        self._error = error
        log.error("endpoint watch of %r refused, not retrying: %s", self.model, error.message)
        self._settled.set()
