"""Spans for every gRPC call, from opentelemetry-instrumentation-grpc's grpc.aio
interceptors, with W3C trace context in the call metadata (its propagator does that), and
three of its open bugs worked around here:

- The client interceptors for unary responses await the call's status inside the
  interceptor, so cancelling the caller cancels only that wait: the RPC carries on and the
  server never hears of it (opentelemetry-python-contrib #3271). Here a cancellation that
  reaches the interceptor cancels the RPC, and its span ends as CANCELLED (upstream it
  never ends, so it is never exported).
- The server interceptor iterates every streaming handler with `async for`, so a handler
  written as a coroutine that calls `context.write` (grpc.health.v1's Watch, any
  coroutine-style stream-stream handler) fails with TypeError (#3066). Such handlers pass
  through untraced. modelyard has no stream-stream RPCs of its own; server reflection's is
  an async generator and would be traced, but health and reflection are never traced
  (probes every few seconds would bury the real traces).
- The server interceptor keeps the caller's context attached across its generator's
  `yield`s. When the client cancels a stream while the handler waits at a `yield`, gRPC
  drops the generator and asyncio closes it later in another task, where detaching fails
  with "Failed to detach context" (#2357). Here a streaming handler is driven by a
  coroutine that writes each response and, whatever happens, closes the handler's
  generator and then the interceptor's in the call's own task: the handler's cleanup
  runs at once, with its span still current, and the context detaches where it was
  attached. ("The handler" is the next interceptor's wrapper; wrappers that iterate the
  real handler should close it in turn, `contextlib.aclosing`, or the real handler is
  closed later, by asyncio, in another task.)

Upstream, a server span starts with status OK and changes only when the handler aborts or
sets a code, so a call its client cancelled (or let run past its deadline) ends looking
successful. Here the span of such a call records CANCELLED (or DEADLINE_EXCEEDED) and an
error status.

The client span of a stream the caller abandons without cancelling (`break` out of the
loop) ends when the call object is released, as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, Status, StatusCode

from modelyard_server.grpc_errors import Handler

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Behaviour: TypeAlias = Callable[..., Any]

#: The span attribute the instrumentation gives a call's status code (a number).
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
#: Calls that get no spans: health probes and reflection (grpcurl), on servers and clients.
#: (A prefix test: upstream's filters, `any_of(health_check(), service_prefix(...))`, run
#: runtime-checked isinstance tests on every call and cost more than the rest of an
#: untraced call's tracing.)
#: PredictMany too: its calls are untraced ones by design (`workers.predict_many`), and a
#: span as long as the stream would say nothing.
UNTRACED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/modelyard.v1.Predict/PredictMany",
)


def untraced(details: grpc.HandlerCallDetails | grpc.aio.ClientCallDetails) -> bool:
    method: str | bytes = details.method
    if isinstance(method, bytes):  # grpc.aio clients give bytes (grpc/grpc#31092)
        method = method.decode()
    return method.startswith(UNTRACED_PREFIXES)


def server_interceptor(provider: TracerProvider) -> grpc.aio.ServerInterceptor:
    """The server's tracing interceptor; put it first in the server's list, so the calls'
    spans are current in every interceptor after it (metrics exemplars, error logs)."""
    # Imported only when tracing is on: the instrumentation costs 2 MB of RSS (30 modules)
    # in every process that never traces.
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return _TracingServerInterceptor(aio_server_interceptor(tracer_provider=provider))


def client_interceptors(provider: TracerProvider) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors a channel needs for tracing, one per call kind."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors  # as above

    interceptors: list[grpc.aio.ClientInterceptor] = []
    for upstream in aio_client_interceptors(
        tracer_provider=provider, filter_=lambda details: not untraced(details)
    ):
        if isinstance(upstream, grpc.aio.UnaryUnaryClientInterceptor):
            interceptors.append(_CancellableUnaryUnary(upstream))
        elif isinstance(upstream, grpc.aio.StreamUnaryClientInterceptor):
            interceptors.append(_CancellableStreamUnary(upstream))
        else:  # streamed responses: the caller iterates the real call, which it can cancel
            interceptors.append(upstream)
    return interceptors


class _TracingServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, upstream: grpc.aio.ServerInterceptor) -> None:
        self._upstream = upstream
        # A traced unary handler serves every call of its method (upstream's wrapper reads
        # only the method's name from the call details), so it is built once per method.
        self._unary: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        cached = self._unary.get(handler_call_details.method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or untraced(handler_call_details) or not _traceable(handler):
            return handler
        if not handler.response_streaming:
            marked = _with_unary_behaviour(
                handler, _marking_cancellation(_unary_behaviour(handler))
            )
            traced = await self._upstream.intercept_service(_given(marked), handler_call_details)
            assert traced is not None  # it wraps what it is given
            self._unary[handler_call_details.method] = traced
            return traced
        # one interception per call: `opened` is this call's handler generator and span
        opened = _Opened()
        tracked = _with_stream_behaviour(handler, _tracking(_stream_behaviour(handler), opened))
        traced = await self._upstream.intercept_service(_given(tracked), handler_call_details)
        assert traced is not None  # it wraps what it is given
        return _with_stream_behaviour(traced, _written(_stream_behaviour(traced), opened))


@dataclass
class _Opened:
    """A streaming call's handler generators (the next interceptor's wrapper), and the span
    the upstream interceptor opened around them."""

    generators: list[AsyncGenerator[Any, None]] = field(default_factory=list)
    span: Span = trace.INVALID_SPAN


def _cancelled(span: Span, context: Context) -> None:
    """Marks the span of a call that ended because its client cancelled it or its deadline
    passed (gRPC cancels the handler either way), unless it has ended already."""
    if not span.is_recording():
        return
    remaining = context.time_remaining()
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    if remaining is None or remaining > 0:
        code = grpc.StatusCode.CANCELLED
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    span.set_status(Status(StatusCode.ERROR, code.name))


def _traceable(handler: Handler) -> bool:
    """Whether the upstream interceptor can wrap this handler (#3066: streaming handlers
    must be async generators, unary ones coroutines)."""
    if handler.response_streaming:
        return inspect.isasyncgenfunction(_stream_behaviour(handler))
    behaviour = handler.stream_unary if handler.request_streaming else handler.unary_unary
    return inspect.iscoroutinefunction(behaviour)


def _unary_behaviour(handler: Handler) -> Behaviour:
    behaviour = handler.stream_unary if handler.request_streaming else handler.unary_unary
    assert behaviour is not None
    return behaviour


def _with_unary_behaviour(handler: Handler, behaviour: Behaviour) -> Handler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, **codec)
    return grpc.unary_unary_rpc_method_handler(behaviour, **codec)


def _marking_cancellation(behaviour: Behaviour) -> Behaviour:
    async def call(request: Any, context: Context) -> Any:
        try:
            return await behaviour(request, context)
        except asyncio.CancelledError:
            _cancelled(trace.get_current_span(), context)  # the upstream's span, current here
            raise

    return call


def _given(handler: Handler) -> Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]:
    async def continuation(_: grpc.HandlerCallDetails) -> Handler:
        return handler

    return continuation


def _stream_behaviour(handler: Handler) -> Behaviour:
    behaviour = handler.stream_stream if handler.request_streaming else handler.unary_stream
    assert behaviour is not None
    return behaviour


def _with_stream_behaviour(handler: Handler, behaviour: Behaviour) -> Handler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, **codec)
    return grpc.unary_stream_rpc_method_handler(behaviour, **codec)


def _tracking(behaviour: Behaviour, opened: _Opened) -> Behaviour:
    def call(request: Any, context: Context) -> AsyncGenerator[Any, None]:
        responses = _marking_stream_cancellation(behaviour(request, context), context)
        opened.generators.append(responses)
        opened.span = trace.get_current_span()  # called inside the upstream's span
        return responses

    return call


async def _marking_stream_cancellation(
    responses: AsyncGenerator[Any, None], context: Context
) -> AsyncGenerator[Any, None]:
    """A cancellation that reaches the handler while it works (not at a `yield`): marked
    here, inside the upstream's span, before that span ends."""
    async with contextlib.aclosing(responses):
        try:
            async for response in responses:
                yield response
        except asyncio.CancelledError:
            _cancelled(trace.get_current_span(), context)
            raise


def _written(traced: Behaviour, opened: _Opened) -> Behaviour:
    async def write_all(request: Any, context: Context) -> None:
        responses: AsyncGenerator[Any, None] = traced(request, context)
        try:
            async for response in responses:
                await context.write(response)
        except asyncio.CancelledError:
            _cancelled(opened.span, context)
            raise
        finally:
            # innermost first: the handler cleans up while its span is current, then the
            # interceptor ends the span and detaches the context in this same task
            try:
                for generator in opened.generators:
                    await generator.aclose()
            finally:
                await responses.aclose()

    return write_all


class _CancellableUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, upstream: grpc.aio.UnaryUnaryClientInterceptor) -> None:
        self._upstream = upstream

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        started = _Started(continuation)
        try:
            return await self._upstream.intercept_unary_unary(
                started.start, client_call_details, request
            )
        except asyncio.CancelledError:
            started.cancel()
            raise


class _CancellableStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, upstream: grpc.aio.StreamUnaryClientInterceptor) -> None:
        self._upstream = upstream

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        started = _Started(continuation)
        try:
            return await self._upstream.intercept_stream_unary(
                started.start, client_call_details, request_iterator
            )
        except asyncio.CancelledError:
            started.cancel()
            raise


class _Started:
    """The call an upstream client interceptor started, and its span, to cancel both."""

    def __init__(self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]]):
        self._continuation = continuation
        self._span: Span | None = None
        self._call: grpc.aio.Call | None = None

    async def start(self, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        self._span = trace.get_current_span()  # the upstream interceptor's client span
        self._call = await self._continuation(details, request)
        return self._call

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._span is not None and self._span.is_recording():
            self._span.set_attribute(RPC_GRPC_STATUS_CODE, grpc.StatusCode.CANCELLED.value[0])
            self._span.set_status(Status(StatusCode.ERROR, "cancelled by the caller"))
            self._span.end()
