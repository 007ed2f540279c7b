"""The server edge where calls are counted and timed, for every modelyard service.

    <namespace>_requests_total{method, model, code}     calls that ended, by status code
    <namespace>_request_seconds{method, model, code}    how long they took

`model` is the request's `model` field ("" for a method whose request has none). A name
outside `models` is counted as "<unknown>": clients choose the names they send, and must
not be able to grow the number of series. A call the client cancelled or let run past its
deadline counts as CANCELLED.

Put it before the `ErrorMappingInterceptor` in the server's list, so it sees the statuses
that mapping chose, and after the tracing interceptor, so each latency carries the call's
trace id as exemplar (`modelyard_server.telemetry.exemplars`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Container
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.grpc_errors import Handler, status_code_of
from modelyard_server.telemetry.exemplars import observe

UNKNOWN_MODEL = "<unknown>"

Context = grpc.aio.ServicerContext[Any, Any]


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times the calls of the services under `prefix` on `registry`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        namespace: str,
        models: Container[str],
        prefix: str = "/modelyard.",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._prefix = prefix
        self._models = models
        self._clock = clock
        self._requests = Counter(
            f"{namespace}_requests",
            "Calls by method, model and gRPC status code.",
            ["method", "model", "code"],
            registry=registry,
        )
        self._seconds = Histogram(
            f"{namespace}_request_seconds",
            "Time from a call's arrival to its end, by method, model and gRPC status code.",
            ["method", "model", "code"],
            registry=registry,
        )
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(self._prefix):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary = self._unary(method, handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(unary, **codec)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream = self._stream(method, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(stream, **codec)
        return handler  # client- and bidi-streaming: none yet in modelyard

    def _unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: Context) -> Any:
            started = self._clock.now()
            # cancelled unless shown otherwise: a call the client cancelled, or one past its
            # deadline, ends with CancelledError (a BaseException)
            code = grpc.StatusCode.CANCELLED
            try:
                response = await behavior(request, context)
                code = _code_set(context, grpc.StatusCode.OK)
                return response
            except Exception as error:
                code = _code_of(error, context)
                raise
            finally:
                self.record(method, request, code, started)

        return call

    def _stream(
        self, method: str, behavior: Callable[..., AsyncGenerator[Any, None]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            started = self._clock.now()
            # as in `_unary`; a stream closed early also ends with GeneratorExit at `yield`
            code = grpc.StatusCode.CANCELLED
            try:
                # closed here, not later by asyncio in another task (see grpc_errors)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
                code = _code_set(context, grpc.StatusCode.OK)
            except Exception as error:
                code = _code_of(error, context)
                raise
            finally:
                self.record(method, request, code, started)

        return call

    def record(self, method: str, request: Any, code: grpc.StatusCode, started: float) -> None:
        """Counts and times one call that ended with `code` (also for calls carried as
        messages of a stream: PredictMany)."""
        labels = (method, self._model_label(request), code.name)
        self._requests.labels(*labels).inc()
        observe(self._seconds.labels(*labels), self._clock.now() - started)

    def _model_label(self, request: Any) -> str:
        model = getattr(request, "model", None)
        if model is None:
            return ""
        return model if model in self._models else UNKNOWN_MODEL


def _code_of(error: Exception, context: Context) -> grpc.StatusCode:
    if isinstance(error, grpc.aio.AbortError):
        # the handler (or the error mapping inside this interceptor) aborted with a code
        return _code_set(context, grpc.StatusCode.UNKNOWN)
    return status_code_of(error)  # what the error mapping will make of it


def _code_set(context: Context, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the handler set or aborted with, else `default`."""
    code: object = context.code()  # None until set, whatever the stubs say
    return code if isinstance(code, grpc.StatusCode) else default
