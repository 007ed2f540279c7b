"""A client that spreads each model's calls over all its healthy replicas.

    async with RoutedClient(["localhost:50070"]) as client:
        result = await client.predict("sentiment", text="I love it")
        async for event in client.predict_stream("gpt2", text="Once", selector="device=cuda"):
            ...

The first call for a (model, selector) subscribes to the control plane's endpoint stream
for it; every call then picks a replica locally (`modelyard.balancing`), so the control
plane is never on the request path and calls go on with the last known set if it is gone.
A call's `selector` replaces the client's default one (None keeps the default).

Retries follow the rule every modelyard hop follows: only UNAVAILABLE, only before the
first response message, only to a replica not tried yet for this call, at most
`max_attempts` in all, and never past the caller's deadline, which covers waiting for the
first endpoint set and every attempt. A replica that refused a call is avoided by later
calls for `eject_s` seconds, so a dead worker costs one failed attempt, not one per call.

A replica that hangs refuses nothing (a SIGSTOPped process keeps its connections open), so
with `rescue` on (the default) an attempt that has no response yet is abandoned, and
retried as if it had been refused, when its replica leaves the endpoint set, or when it
waited longer than `attempt_timeouts` derives from the route's recent latencies (for a
stream: the time to its first message) while nothing came back from that replica to any
of this client's calls. `modelyard.rescue` explains the derivation.

`predict(..., hedge_after=s)` hedges a call: still unanswered after `s` seconds, it gets a
second attempt on a replica no attempt of it is using, and the first answer wins
(`modelyard.hedging`). Streams are not hedged: two streams would each deliver output.

Results, stream events and errors a replica returned name it (`worker`), so callers such
as the composer's timeline can say who served a call, or who failed it.

Deadlines, ejections, idle routes, the balancer's timings and the endpoint watches all read
one `clock` (`modelyard.clock`); gRPC enforces each attempt's share of the deadline itself.

`interceptors` go on every channel the client opens, to workers and to control planes (the
services pass their tracing interceptors: the trace goes on to the worker).

Endpoints that are registered third-party APIs (`Endpoint.http_api`) are called through
`outside_apis`, which the services pass (the client core has no HTTP client); a client
without it never picks them. `attempts` is
told of every attempt (`modelyard.attempts`: the composer makes a span of each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import grpc
import grpc.aio

from modelyard.attempts import Attempt, AttemptTracker, Untracked
from modelyard.backoff import Backoff
from modelyard.balancing import POLICIES, Balancer
from modelyard.channels import aio_channel, bearer, token_interceptors
from modelyard.client import (
    CHANNEL_OPTIONS,
    MAX_MESSAGE_BYTES,
    Prediction,
    StreamEvent,
    build_request,
    prediction_of,
    stream_event_of,
)
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoint_watch import EndpointWatcher
from modelyard.endpoints import Endpoint, EndpointSet
from modelyard.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ModelyardError,
    Reason,
    Unavailable,
    from_rpc_error,
)
from modelyard.hedging import hedged
from modelyard.multiplex import MultiplexedStub
from modelyard.rescue import Abandoned, AttemptTimeouts, LatencyWindow, Rescues
from modelyard.selectors import Selector, parse_selector
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc

log = logging.getLogger(__name__)

#: What an attempt calls: a worker's generated stub, or one that multiplexes its Predicts.
WorkerStub: TypeAlias = "predict_pb2_grpc.PredictAsyncStub | MultiplexedStub"


class OutsideApis(Protocol):
    """Calls registered third-party APIs as if they were workers."""

    def stub(self, endpoint: Endpoint) -> predict_pb2_grpc.PredictAsyncStub:
        """A stub whose Predict and PredictStream call `endpoint.http_api`, failing an
        attempt with UNAVAILABLE (an AioRpcError) so that it is retried elsewhere."""
        ...


@dataclass(slots=True)
class _Route:
    selector: Selector
    watcher: EndpointWatcher
    balancer: Balancer
    rescues: Rescues
    # answered attempts: Predict's latency, PredictStream's time to the first message
    latencies: dict[bool, LatencyWindow]  # keyed by streaming
    used_at: float = 0.0

    def busy(self) -> bool:
        return any(self.balancer.in_flight(e.worker_id) for e in self.balancer.endpoints)


class _Channels:
    """One channel per worker address, shared by all calls; closed once its worker has left
    every endpoint set and no call uses it (closing earlier would cut calls in flight)."""

    def __init__(
        self,
        interceptors: Sequence[grpc.aio.ClientInterceptor],
        credentials: grpc.ChannelCredentials | None,
        outside_apis: OutsideApis | None,
        multiplex: Callable[[], bool] | None = None,
        token: str | None = None,
    ) -> None:
        self._interceptors = interceptors
        self._credentials = credentials
        self._outside_apis = outside_apis
        self._multiplex = multiplex
        self._stream_metadata = bearer(token) if token else ()
        self._stubs: dict[str, tuple[grpc.aio.Channel, WorkerStub]] = {}
        self._users: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, endpoint: Endpoint) -> _StubInUse:
        """`with channels.stub(endpoint) as stub:` the stub of `endpoint`, its channel kept
        open until the `with` ends."""
        if endpoint.http_api is not None and self._outside_apis is not None:
            return _StubInUse(self, None, self._outside_apis.stub(endpoint))
        address = endpoint.address
        found = self._stubs.get(address)
        if found is None:
            channel = aio_channel(
                address,
                options=CHANNEL_OPTIONS,
                credentials=self._credentials,
                interceptors=self._interceptors,
            )
            generated = predict_pb2_grpc.PredictStub(channel)
            stub: WorkerStub = generated
            if self._multiplex is not None:
                stub = MultiplexedStub(
                    generated,
                    self._multiplex,
                    metadata=self._stream_metadata,
                    max_receive_bytes=MAX_MESSAGE_BYTES,
                )
            found = self._stubs[address] = (channel, stub)
        return _StubInUse(self, address, found[1])

    def use(self, address: str) -> None:
        self._users[address] = self._users.get(address, 0) + 1

    def release(self, address: str) -> None:
        users = self._users[address] = self._users[address] - 1
        # every unused channel but this one is wanted already (keep_only retired the rest)
        if users == 0 and address not in self._wanted:
            self._retire(address)

    def keep_only(self, addresses: set[str]) -> None:
        self._wanted = addresses
        for address in [a for a in self._stubs if a not in addresses]:
            if self._users.get(address, 0) == 0:
                self._retire(address)

    def _retire(self, address: str) -> None:
        channel, _ = self._stubs.pop(address)
        self._users.pop(address, None)
        task = asyncio.get_running_loop().create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        channels = [channel for channel, _ in self._stubs.values()]
        self._stubs.clear()
        await asyncio.gather(*self._closing, *(channel.close() for channel in channels))


class _StubInUse:
    """`_Channels.stub`'s context (a plain class: one is entered per attempt). A registered
    API's stub (no address) has no channel to keep open."""

    __slots__ = ("_address", "_channels", "_stub")

    def __init__(self, channels: _Channels, address: str | None, stub: WorkerStub) -> None:
        self._channels = channels
        self._address = address
        self._stub = stub

    def __enter__(self) -> WorkerStub:
        if self._address is not None:
            self._channels.use(self._address)
        return self._stub

    def __exit__(self, *exc: object) -> None:
        if self._address is not None:
            self._channels.release(self._address)


class RoutedClient:
    """The asyncio client of a modelyard cluster; create it inside the running loop."""

    def __init__(
        self,
        control_plane_addresses: Sequence[str],
        *,
        policy: str = "p2c",
        selector: str = "",
        timeout: float | None = None,
        ready_timeout: float = 10.0,
        max_attempts: int = 3,
        eject_s: float = 2.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        idle_timeout_s: float | None = 5.0,
        route_idle_s: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        attempts: AttemptTracker | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        outside_apis: OutsideApis | None = None,
        rescue: bool = True,
        attempt_timeouts: AttemptTimeouts | None = None,
        multiplex: Callable[[], bool] | None = None,
    ) -> None:
        """`multiplex`, asked at each Predict attempt: whether it may go over the worker's
        PredictMany stream (`modelyard.multiplex`; None: every call is unary)."""
        if policy not in POLICIES:
            raise InvalidArgument(f"unknown balancing policy {policy!r}; use one of {POLICIES}")
        if not control_plane_addresses:
            raise InvalidArgument("at least one control plane address is needed")
        self.addresses = tuple(control_plane_addresses)
        self.policy = policy
        self.selector = parse_selector(selector)  # a typo fails here, not at the first call
        self._selector_text = str(self.selector)  # the routes' key of calls without their own
        self.timeout = timeout
        self.ready_timeout = ready_timeout  # the longest a call waits for a first endpoint set
        self.max_attempts = max_attempts
        self.eject_s = eject_s
        self._backoff = backoff
        # A control plane re-sends every set each `refresh_seconds` (1 s by default), so a
        # stream silent this long means a hung or partitioned replica: try the next one.
        self.idle_timeout_s = idle_timeout_s
        # A (model, selector) nobody asked about for this long stops being watched: each
        # route holds a WatchEndpoints stream on a control plane, and tools (graph
        # validation, typos) would otherwise leave them open for the client's whole life.
        self.route_idle_s = route_idle_s
        self._retiring: set[asyncio.Task[None]] = set()
        self._rng = rng or random.Random()
        self._clock = clock
        self._routes: dict[tuple[str, str], _Route] = {}
        #: On every channel this client opens (read by tools that open their own): the
        #: token's, then the caller's.
        self.interceptors = (*token_interceptors(token), *interceptors)
        #: TLS to the control planes and the workers; plaintext when None.
        self.credentials = credentials
        self._outside_apis = outside_apis
        self._channels = _Channels(
            self.interceptors, credentials, outside_apis, multiplex=multiplex, token=token
        )
        self._attempts = attempts or Untracked()
        #: Whether unanswered attempts on departed or hung replicas are abandoned and
        #: retried elsewhere (module docstring).
        self.rescue = rescue
        self.attempt_timeouts = attempt_timeouts or AttemptTimeouts()

    async def __aenter__(self) -> RoutedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stops every endpoint watch and closes every channel."""
        routes = list(self._routes.values())
        self._routes.clear()
        for route in routes:
            route.rescues.close()
        await asyncio.gather(*(route.watcher.stop() for route in routes), *self._retiring)
        await self._channels.close()

    async def wait_for_endpoints(
        self, model: str, *, timeout: float, selector: str | None = None
    ) -> tuple[Endpoint, ...]:
        """The replicas of `model` once at least one exists, or () after `timeout` seconds
        (for tools such as graph validation; calls wait inside predict)."""
        deadline = self._clock.now() + timeout
        with contextlib.suppress(Unavailable, DeadlineExceeded):
            await self._ready_route(model, selector, deadline)
        while not (found := self.endpoints(model, selector)) and self._clock.now() < deadline:
            await self._clock.sleep(0.02)  # sets arrive by push to the balancer; poll briefly
        return found

    def endpoints(self, model: str, selector: str | None = None) -> tuple[Endpoint, ...]:
        """The replicas calls for (model, selector) currently choose from (for tools, tests)."""
        route = self._routes.get(self._route_key(model, selector)[0])
        return () if route is None else route.balancer.endpoints

    def endpoint_sets(self) -> tuple[EndpointSet, ...]:
        """The last set each watched (model, selector) received: for services that size
        themselves from the replicas (the composer's admission limit). A set is a new object
        only when it differs from the last one (loads included)."""
        return tuple(s for r in self._routes.values() if (s := r.watcher.current) is not None)

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        selector: str | None = None,
        hedge_after: float | None = None,
        **named_inputs: Any,
    ) -> Prediction:
        """With `hedge_after` (seconds), a call still unanswered by then gets a second
        attempt on another replica, and the first answer wins (`modelyard.hedging`)."""
        request = build_request(
            pb.PredictRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        deadline = self._deadline(timeout)
        route = await self._ready_route(model, selector, deadline)
        call = _Call()
        if not hedge_after or hedge_after <= 0:
            return await self._predict_on(route, request, deadline, call)
        return await hedged(
            self._clock,
            hedge_after,
            lambda: self._predict_on(route, request, deadline, call),
            may_hedge=lambda: _someone_else(route, call.failed.keys() | call.busy),
        )

    async def _predict_on(
        self, route: _Route, request: pb.PredictRequest, deadline: float | None, call: _Call
    ) -> Prediction:
        """Attempts until a replica answers (the retry rules of the module docstring); two
        of these run side by side for a hedged call, sharing `call`."""
        model = request.model
        silenced = False  # an attempt was abandoned for silence: the next ones wait on
        while True:
            endpoint = self._pick(route, call.failed, busy=call.busy)
            call.attempts += 1
            attempt = Attempt(model, endpoint.worker_id, endpoint.address, call.attempts, False)
            unanswered_s = self._attempt_timeout(
                route, endpoint, call.failed, deadline, streaming=False, silenced=silenced
            )
            call.busy.add(endpoint.worker_id)
            try:
                with (
                    self._attempts.track(attempt) as tracked,
                    self._channels.stub(endpoint) as stub,
                    route.balancer.track(endpoint.worker_id),
                    tracked.active(),
                ):
                    started = self._clock.now()
                    async with route.rescues.guard(endpoint.worker_id, unanswered_s):
                        response = await stub.Predict(request, timeout=self._left(deadline, model))
                    route.rescues.heard_from(endpoint.worker_id)
                    route.latencies[False].record(self._clock.now() - started)
            except grpc.aio.AioRpcError as error:
                self._retry_or_raise(route, endpoint, error, call.failed)
                continue
            except Abandoned as abandoned:
                silenced = silenced or abandoned.silent
                why = abandoned.message
                self._retry_elsewhere(route, endpoint, why, Reason.UNAVAILABLE, call.failed)
                continue
            finally:
                call.busy.discard(endpoint.worker_id)
            return prediction_of(response, endpoint.worker_id)

    async def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        selector: str | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[StreamEvent]:
        request = build_request(
            pb.PredictStreamRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        deadline = self._deadline(timeout)
        route = await self._ready_route(model, selector, deadline)
        failed = _Refusals()
        silenced = False  # an attempt was abandoned for silence: the next ones wait on
        while True:
            endpoint = self._pick(route, failed)
            delivered = 0
            attempt = Attempt(model, endpoint.worker_id, endpoint.address, len(failed) + 1, True)
            unanswered_s = self._attempt_timeout(
                route, endpoint, failed, deadline, streaming=True, silenced=silenced
            )
            try:
                with (
                    self._attempts.track(attempt) as tracked,
                    self._channels.stub(endpoint) as stub,
                ):
                    with tracked.active():  # the call's client span starts: not across yields
                        call = stub.PredictStream(request, timeout=self._left(deadline, model))
                    # streams are not timed: their length says nothing about the replica's speed
                    route.balancer.begin(endpoint.worker_id)
                    try:
                        messages = aiter(call)
                        started = self._clock.now()
                        # only the first message is guarded: after it a retry would repeat
                        # output, and a long generation must not be cut short
                        async with route.rescues.guard(endpoint.worker_id, unanswered_s):
                            first = await anext(messages, None)
                        if first is None:
                            return
                        route.rescues.heard_from(endpoint.worker_id)
                        route.latencies[True].record(self._clock.now() - started)
                        yield stream_event_of(first, 0, endpoint.worker_id)
                        delivered = 1
                        async for message in messages:
                            route.rescues.heard_from(endpoint.worker_id)
                            yield stream_event_of(message, delivered, endpoint.worker_id)
                            delivered += 1
                        return
                    except grpc.aio.AioRpcError as error:
                        if delivered:  # the caller has seen output: a retry would repeat it
                            raise _returned_by(endpoint, error) from None
                        raise  # the attempt failed; retried below if it may be
                    finally:
                        call.cancel()  # a consumer that stops early stops the model's work
                        route.balancer.end(endpoint.worker_id)
            except grpc.aio.AioRpcError as error:
                self._retry_or_raise(route, endpoint, error, failed)
            except Abandoned as abandoned:
                silenced = silenced or abandoned.silent
                self._retry_elsewhere(
                    route, endpoint, abandoned.message, Reason.UNAVAILABLE, failed
                )

    def _route_key(self, model: str, selector: str | None) -> tuple[tuple[str, str], Selector]:
        """The routes' key for (model, selector), and the selector parsed (equal selectors,
        however written, share one route); the default's is made once, in __init__."""
        if selector is None:
            return (model, self._selector_text), self.selector
        parsed = parse_selector(selector)
        return (model, str(parsed)), parsed

    async def _ready_route(
        self, model: str, selector: str | None, deadline: float | None
    ) -> _Route:
        """The route of (model, selector), watched from now on if it was not, once it has
        an endpoint set (waiting for its first within the deadline and `ready_timeout`)."""
        key, parsed = self._route_key(model, selector)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._new_route(model, parsed)
        route.used_at = self._clock.now()
        self._retire_idle_routes(route.used_at)
        left = self._left(deadline, model)
        if route.watcher.current is not None:  # it has had a set: wait_ready would return it
            return route
        wait = self.ready_timeout if left is None else min(left, self.ready_timeout)
        try:
            await route.watcher.wait_ready(wait)
        except Unavailable:
            if left is not None and left < self.ready_timeout:
                raise DeadlineExceeded(
                    f"deadline exceeded waiting for the endpoints of model {model!r}"
                ) from None
            raise
        return route

    def _new_route(self, model: str, selector: Selector) -> _Route:
        balancer = Balancer(self.policy, model=model, clock=self._clock, rng=self._rng)
        rescues = Rescues(self._clock)
        watcher = EndpointWatcher(
            self.addresses,
            model,
            str(selector),
            on_update=lambda endpoints: self._on_update(balancer, rescues, endpoints),
            backoff=self._backoff,
            idle_timeout_s=self.idle_timeout_s,
            clock=self._clock,
            interceptors=self.interceptors,
            credentials=self.credentials,
        )
        latencies = {streaming: LatencyWindow(self._clock) for streaming in (False, True)}
        route = _Route(selector, watcher, balancer, rescues, latencies)
        watcher.start()
        return route

    def _retire_idle_routes(self, now: float) -> None:
        idle = [
            key
            for key, route in self._routes.items()
            if now - route.used_at > self.route_idle_s and not route.busy()
        ]
        for key in idle:
            task = asyncio.get_running_loop().create_task(self._routes.pop(key).watcher.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if idle:
            routes = self._routes.values()
            self._channels.keep_only(_worker_addresses(routes))

    def _on_update(self, balancer: Balancer, rescues: Rescues, endpoint_set: EndpointSet) -> None:
        endpoints = endpoint_set.endpoints
        if self._outside_apis is None:  # it could not call them
            endpoints = tuple(e for e in endpoints if e.http_api is None)
        departed = {e.worker_id for e in balancer.endpoints} - {e.worker_id for e in endpoints}
        balancer.update(endpoints)
        # With no replica left, a call that may still be answered (a draining worker
        # finishes its calls) is better than one that fails at once for want of another.
        if self.rescue and endpoints:
            for worker_id in sorted(departed):
                if rescued := rescues.abandon(worker_id, "left the endpoint set"):
                    log.info(
                        "%s left the endpoint set of %r: %d unanswered call(s) go elsewhere",
                        worker_id,
                        balancer.model,
                        rescued,
                    )
        self._channels.keep_only(_worker_addresses(self._routes.values()))

    def _pick(self, route: _Route, failed: _Refusals, busy: Collection[str] = ()) -> Endpoint:
        """A replica for the next attempt: not one that refused this call, nor one `busy`
        with another attempt of it (a hedge)."""
        try:
            return route.balancer.pick(route.selector, exclude=failed.keys() | set(busy))
        except Unavailable as error:
            if failed:  # what the replicas tried said matters more than that none is left
                raise Unavailable(
                    f"{error.message}; {_reasons(failed)}",
                    reason=failed.last_reason or error.reason,
                ) from None
            raise

    def _attempt_timeout(
        self,
        route: _Route,
        endpoint: Endpoint,
        failed: _Refusals,
        deadline: float | None,
        *,
        streaming: bool,
        silenced: bool,
    ) -> float | None:
        """How long the attempt on `endpoint` may wait with its replica silent before it is
        abandoned (None: until the caller's deadline). Once per call at most (`silenced`:
        one was): what was slow on one replica may be slow on the next, and must end."""
        if not self.rescue or silenced:
            return None
        # with nobody to take the call over, a slow answer beats a certain failure; asked
        # first, as it is the cheaper question (a model with one replica never derives)
        if not _someone_else(route, {endpoint.worker_id, *failed}):
            return None
        timeout = self.attempt_timeouts.derive(route.latencies[streaming])
        if timeout is None:
            return None
        if deadline is not None and self._clock.now() + timeout >= deadline:
            return None  # the caller's deadline comes first, and its error says so
        return timeout

    def _retry_or_raise(
        self,
        route: _Route,
        endpoint: Endpoint,
        error: grpc.aio.AioRpcError,
        failed: _Refusals,
    ) -> None:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise _returned_by(endpoint, error) from None
        reason = _returned_by(endpoint, error).reason
        self._retry_elsewhere(route, endpoint, error.details() or "", reason, failed)

    def _retry_elsewhere(
        self,
        route: _Route,
        endpoint: Endpoint,
        details: str,
        reason: str,
        failed: _Refusals,
    ) -> None:
        """Counts the attempt on `endpoint` as refused: ejects the replica, and raises
        Unavailable once `max_attempts` were made."""
        failed[endpoint.worker_id] = details
        failed.last_reason = reason
        route.balancer.eject(endpoint.worker_id, self.eject_s)
        if len(failed) >= self.max_attempts:
            # the last replica's reason (MODEL_LOADING, WORKER_DRAINING, ...); all are listed
            last = Unavailable(
                f"model {route.balancer.model!r} unavailable after {len(failed)} attempts; "
                f"{_reasons(failed)}",
                reason=reason,
            )
            last.worker = endpoint.worker_id  # the others are named in the message
            raise last from None
        log.info(
            "%s unavailable for a call to %r (%s); retrying on another replica",
            endpoint.worker_id,
            route.balancer.model,
            details,
        )

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = timeout or self.timeout
        return None if timeout is None else self._clock.now() + timeout

    def _left(self, deadline: float | None, model: str) -> float | None:
        """Time left before the caller's deadline (None: no deadline); raises once it passed."""
        if deadline is None:
            return None
        left = deadline - self._clock.now()
        if left <= 0:
            raise DeadlineExceeded(f"deadline exceeded calling model {model!r}")
        return left


def _returned_by(endpoint: Endpoint, error: grpc.aio.AioRpcError) -> ModelyardError:
    """The error a replica answered with, naming that replica."""
    returned = from_rpc_error(error)
    returned.worker = endpoint.worker_id
    return returned


class _Refusals(dict[str, str]):
    """Worker id -> why it refused this call, and the last refusal's reason: a call that
    ran out of replicas says why the last one failed (API_FAILED, MODEL_LOADING, ...), not
    merely that none is left."""

    last_reason: str = ""


@dataclass(slots=True)
class _Call:
    """What the attempts of one call share (two run side by side when it is hedged)."""

    failed: _Refusals = field(default_factory=_Refusals)
    busy: set[str] = field(default_factory=set)  # replicas with an attempt in flight
    attempts: int = 0


def _someone_else(route: _Route, excluded: Collection[str]) -> bool:
    """Whether a replica outside `excluded` could take an attempt of the route's calls."""
    return any(
        e.worker_id not in excluded and route.selector.matches(e.tags)
        for e in route.balancer.endpoints
    )


def _worker_addresses(routes: Iterable[_Route]) -> set[str]:
    """The addresses the channel pool should keep open (registered APIs use none)."""
    return {e.address for r in routes for e in r.balancer.endpoints if e.http_api is None}


def _reasons(failed: dict[str, str]) -> str:
    return "; ".join(f"{worker_id}: {details}" for worker_id, details in failed.items())
