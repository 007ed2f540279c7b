"""etcd user/password authentication that outlives its token.

etcd answers Authenticate with a token that it forgets: after --auth-token-ttl (5 min by
default) without use on that member, whenever etcd restarts, and (JWT tokens) after a fixed
lifetime. aetcd 1.0 authenticates once at connect and sends that token for ever, so after
any of these every call fails "invalid auth token" and the service never recovers (a
failover to another member of an idle cluster does it too: each member times tokens on its
own). Here every call carries the current token (channel interceptors), a unary call
refused for its token authenticates again and is sent once more (etcd's Go client does the
same; a refused call was not applied), and a watch refused on a stream that opened with a
stale token ends that stream, so the next watch opens one with a fresh token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from aetcd import exceptions, rpc, watcher

AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
#: what etcd answers a call whose token it no longer accepts (etcd's Go client refreshes
#: its token on the same ones)
STALE_TOKEN = (
    "etcdserver: invalid auth token",
    "etcdserver: revision of auth store is old",
    "etcdserver: user name is empty",
)


class TokenSource:
    """The current token: fetched when first needed and again once etcd refuses it."""

    def __init__(self, username: str, password: str, timeout: float) -> None:
        self._request = rpc.AuthenticateRequest(name=username, password=password)
        self._timeout = timeout
        self._token: str | None = None
        self._lock = asyncio.Lock()
        #: an AuthStub on the channel (set once it exists: the interceptors need the token
        #: before the channel does, and pass Authenticate itself through untouched)
        self.stub: Any = None

    async def current(self) -> str:
        async with self._lock:  # one Authenticate however many calls need a token at once
            if self._token is None:
                reply = await self.stub.Authenticate(self._request, timeout=self._timeout)
                self._token = str(reply.token)
            return self._token

    def discard(self, token: str) -> None:
        """etcd refused `token`: the next call authenticates again (unless one already did)."""
        if self._token == token:
            self._token = None

    def forget(self) -> None:
        """Some token was refused, which one is not known: the next call authenticates."""
        self._token = None


def interceptors(tokens: TokenSource) -> list[grpc.aio.ClientInterceptor]:
    return [_UnaryUnary(tokens), _UnaryStream(tokens), _StreamStream(tokens)]


class _WithToken:
    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    async def _add_token(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[grpc.aio.ClientCallDetails, str | None]:
        if details.method in (AUTHENTICATE, AUTHENTICATE.encode()):  # bytes at run time
            return details, None
        token = await self._tokens.current()
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["token"] = token
        return details._replace(metadata=metadata), token  # type: ignore[attr-defined]


class _UnaryUnary(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        details, token = await self._add_token(client_call_details)
        call = await continuation(details, request)
        if token is None or await call.details() not in STALE_TOKEN:
            return call
        self._tokens.discard(token)
        details, _ = await self._add_token(client_call_details)
        return await continuation(details, request)


class _UnaryStream(_WithToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        details, _ = await self._add_token(client_call_details)
        return await continuation(details, request)


class _StreamStream(_WithToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        details, _ = await self._add_token(client_call_details)
        return await continuation(details, request_iterator)


class RefusalAwareWatcher(watcher.Watcher):  # type: ignore[misc]  # aetcd ships no types
    """aetcd's watcher, told that etcd can refuse a watch.

    etcd answers a refused create (permission denied, or the stream's token went stale)
    with `created` and `canceled` both set; aetcd 1.0 takes that for a created watch, which
    then never delivers an event and takes over the watch id of a live one on the same
    stream. Here the create fails with etcd's reason, and with `end_stream_on_refusal` (a
    token may be to blame) the stream ends: its watches fail, their owners watch again,
    and that opens a new stream with a current token.

    A create that times out (WatchTimeoutError, etcd slow to answer) ends the stream too:
    etcd may still answer it, and aetcd would give that late answer's watch id, and so
    another prefix's events, to the next watch created on the stream, for good (a
    composer's worker informer then saw no worker arrive).
    """

    def __init__(
        self, watchstub: Any, *, timeout: float, on_refused: Callable[[], None] | None
    ) -> None:
        super().__init__(watchstub, timeout=timeout)
        self._on_refused = on_refused
        self._ending: asyncio.Task[None] | None = None

    async def add_callback(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().add_callback(*args, **kwargs)
        except exceptions.WatchTimeoutError as error:
            await self._terminate_stream(error)  # not the stream's task: it may await it
            raise

    async def _handle_response(self, response: Any) -> None:
        if not (response.created and response.canceled):
            await super()._handle_response(response)
            return
        error = exceptions.ClientError(response.cancel_reason or "etcd refused the watch")
        async with self._lock:
            if self._new_callback is not None:
                self._new_callback.error = error
                self._new_callback_ready.notify_all()
        if self._on_refused is not None:
            self._on_refused()
            # from another task: ending the stream cancels and awaits the one running this
            self._ending = asyncio.get_running_loop().create_task(self._terminate_stream(error))
