"""The server edge where exceptions become gRPC statuses, for every modelyard service.

A `ModelyardError` becomes its own code and message, with its details (reason, field
violations, resource: `modelyard_server.error_status`) as google.rpc.Status details.
Anything else is a bug: it becomes INTERNAL with a fixed message (exception text can carry
paths, inputs or secrets) and no details beyond the reason INTERNAL, and its traceback is
logged. Aborts and cancellations pass through untouched.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import grpc.aio

from modelyard.errors import ModelyardError, Reason, ResourceExhausted
from modelyard_server.error_status import details_metadata

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"
_INTERNAL_DETAILS = details_metadata(ModelyardError(INTERNAL_MESSAGE, reason=Reason.INTERNAL))

#: A status's trailing metadata: the error's details (bytes) and gRPC's retry hint (text).
Trailers: TypeAlias = tuple[tuple[str, str | bytes], ...]
# generic only in the type stubs, not at run time
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


async def abort_with(error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(*status_of(error, _method(context)))


def status_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str, Trailers]:
    """The code, message and trailing metadata (details, retry hint) a call of `method`
    that raised `error` ends with; an error that is not a `ModelyardError` is logged."""
    if isinstance(error, ModelyardError):
        return error.code, error.message, details_metadata(error) + _pushback(error)
    log.error("unexpected error in %s", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, _INTERNAL_DETAILS


def _pushback(error: ModelyardError) -> tuple[tuple[str, str], ...]:
    """gRPC's retry hint (`grpc-retry-pushback-ms`), which its client retry policy obeys."""
    if isinstance(error, ResourceExhausted) and error.retry_after is not None:
        return (("grpc-retry-pushback-ms", str(round(error.retry_after * 1000))),)
    return ()


def _method(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return str(context._rpc_event.call_details.method.decode())  # type: ignore[attr-defined]
    except AttributeError:
        return "a call"


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The status a client will see for `error` (for metrics and logs)."""
    if isinstance(error, ModelyardError):
        return error.code
    if isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of the services under `prefix` with the error mapping."""

    def __init__(self, prefix: str = "/modelyard.") -> None:
        self._prefix = prefix
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
        wrapped = _wrap(handler)
        self._wrapped[method] = wrapped
        return wrapped


def _wrap(handler: Handler) -> Handler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), **codec)
    if handler.unary_stream is not None:
        if not inspect.isasyncgenfunction(handler.unary_stream):
            return handler
        return grpc.unary_stream_rpc_method_handler(_stream(handler.unary_stream), **codec)
    return handler  # client- and bidi-streaming: none yet in modelyard


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(error, context)

    return call


def _stream(
    behavior: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            # closed here, not later by asyncio in another task: when the client goes away
            # mid-stream the handler's cleanup runs at once, in the call's own context
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(error, context)

    return call
