"""Channels to modelyard servers: TLS when given channel credentials, plaintext otherwise,
and a bearer token on every call when given one.

    credentials = grpc.ssl_channel_credentials(Path("ca.pem").read_bytes())
    channel = aio_channel("composer:50070", credentials=credentials, token=token)

The token travels as `authorization: Bearer <token>` call metadata. Over a plaintext
channel anyone on the path can read it: send one in the clear only on a trusted network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

Options = Sequence[tuple[str, Any]]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries `token`."""
    return (("authorization", f"Bearer {token}"),)


def sync_channel(
    address: str,
    *,
    options: Options = (),
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> grpc.Channel:
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    if token:
        return grpc.intercept_channel(channel, _SyncToken(token))
    return channel


def aio_channel(
    address: str,
    *,
    options: Options = (),
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    chain = [*token_interceptors(token), *interceptors]
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=chain)


def token_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that put `token` on every unary and server-streaming call (none for no
    token): for code that builds its channels itself."""
    if not token:
        return []
    return [_AioUnaryToken(token), _AioStreamToken(token)]


def _with_token(metadata: Any, token: str) -> list[tuple[str, Any]]:
    kept = [(k, v) for k, v in (metadata or ()) if k != "authorization"]
    return [*kept, *bearer(token)]


class _SyncToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        # grpc's own details are a namedtuple; only its metadata changes
        metadata = _with_token(details.metadata, self._token)
        return details._replace(metadata=metadata)  # type: ignore[attr-defined,no-any-return]

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


class _AioToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*_with_token(details.metadata, self._token))
        return details._replace(metadata=metadata)  # type: ignore[attr-defined,no-any-return]


class _AioUnaryToken(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamToken(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> AsyncIterator[Any] | Any:
        return await continuation(self._details(client_call_details), request)
