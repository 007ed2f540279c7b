"""Requests that do not decode are INVALID_ARGUMENT, not gRPC Python's UNKNOWN.

gRPC Python answers a request its deserializer cannot parse with UNKNOWN and a message
naming Python classes. Registering a servicer through `decoding(server)` instead of the
server itself wraps each method's deserializer: bytes that are not the method's request
message reach the handler as a marker, and the call ends with INVALID_ARGUMENT saying which
message was expected, before the servicer sees anything.

    composer_pb2_grpc.add_ComposerServicer_to_server(servicer, decoding(self.server))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import grpc.aio

from modelyard.names import quote

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class _Undecodable:
    expected: str


class _DecodingRegistrar:
    """Stands in for a server where generated `add_*Servicer_to_server` functions register.

    They call `add_generic_rpc_handlers` with a handler built from the method table and then
    `add_registered_method_handlers` with the table itself (grpcio-tools' generated code since
    1.63); only the table can be wrapped, so both registrations are made from it."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Left to `add_registered_method_handlers`, which gets the same methods as a table."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        wrapped = {name: _wrap(handler) for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)


def decoding(server: grpc.aio.Server) -> Any:
    """What to pass to a generated `add_*Servicer_to_server` instead of `server` (typed Any:
    the generated functions take a server)."""
    return _DecodingRegistrar(server)


def _wrap(handler: Handler) -> Handler:
    parse = handler.request_deserializer
    if parse is None:
        return handler
    expected = _message_name(parse)

    def deserializer(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception:  # a DecodeError, or any other failure to read these bytes
            return _Undecodable(expected)

    codec = {
        "request_deserializer": deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_stream(handler.unary_stream), **codec)
    return handler  # client- and bidi-streaming: none in modelyard


def _message_name(parse: Callable[[bytes], Any]) -> str:
    message_class = getattr(parse, "__self__", None)  # generated code passes Message.FromString
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


async def _refuse(request: _Undecodable, context: Context) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request does not decode as a {quote(request.expected)} message",
    )


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(request, context)
        return await behavior(request, context)

    return call


def _stream(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await _refuse(request, context)
        # closed here, in the call's own task, as the error mapping does (grpc_errors)
        async with contextlib.aclosing(behavior(request, context)) as responses:
            async for response in responses:
                yield response

    return call
