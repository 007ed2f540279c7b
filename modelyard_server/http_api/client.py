"""The one HTTP client a service calls registered APIs with.

One pooled `httpx.AsyncClient` per service (connections are reused across calls and
registrations), with:
- a deadline per call (the registration's timeout, or the caller's if shorter) over the
  whole exchange, redirects and body included, and a shorter one for connecting;
- a response size limit: the body is read in chunks and the call fails past
  `max_response_bytes` (counted after decompression, so a small gzip bomb is caught too);
- redirects followed by hand, at most `max_redirects`, and only to the same scheme, host
  and port: anywhere else fails the call (a redirect could otherwise lead past the SSRF
  guard's intent, e.g. to a metadata service, or carry the registration's headers away);
- the SSRF guard (`ssrf.resolve_checked`) inside the connection pool's network backend, so
  the address checked is the address connected to (no window for DNS rebinding between
  check and connect), for every new connection, after redirects too; TLS still verifies
  the certificate against the URL's host name (SNI and Host stay the name). A pooled
  connection was checked when it was opened.
- no proxies or settings from the environment (`trust_env=False`): a proxy would be the
  only address checked. SSL_CERT_FILE / SSL_CERT_DIR are still honoured for CA bundles.

Every failure raises `Unavailable` saying what failed (never a header value); the caller
adds which registration it was.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpcore
import httpx

from modelyard.errors import Unavailable
from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.http_api.ssrf import AddressRefused, resolve_checked


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend that connects only to addresses the SSRF guard passed:
    it resolves the host itself, checks every address, then connects to them in turn."""

    def __init__(self, allowed_networks: Sequence[str]) -> None:
        self._allowed = tuple(allowed_networks)
        self._backend = httpcore.AnyIOBackend()  # what httpx uses on asyncio

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self._allowed)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # try the host's next address, as a resolver-aware dial does
        raise failure or httpcore.ConnectError(f"{host} resolved to no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("registered APIs are called over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a pool that connects through `GuardedBackend`. httpx
    takes no network backend, so its pool is replaced with one built the same way; this
    relies on httpx 0.28's `_pool` (pinned), and the SSRF tests of the client fail if an
    upgrade moves it."""

    def __init__(self, settings: HttpApiSettings) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
            keepalive_expiry=settings.keepalive_expiry_s,
            network_backend=GuardedBackend(settings.allowed_networks),
        )


class HttpApiClient:
    """POSTs JSON to registered APIs; create it in the running loop, `aclose()` it last."""

    def __init__(self, settings: HttpApiSettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            transport=GuardedTransport(settings), follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post_json(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float
    ) -> Any:
        """The JSON document `url` answers a POST of `body` with (a 2xx status)."""
        connect_s = min(self.settings.connect_timeout_s, timeout_s)
        sent = httpx.Headers({"content-type": "application/json"})
        sent.update(headers)  # by name whatever its case: a registration's Content-Type wins
        request = self._http.build_request(
            "POST",
            url,
            content=body,
            headers=sent,
            timeout=httpx.Timeout(timeout_s, connect=connect_s),
        )
        try:
            async with asyncio.timeout(timeout_s):
                return await self._follow(request)
        except TimeoutError:
            raise Unavailable(f"no answer within {timeout_s:g} s") from None
        except httpx.ConnectTimeout:
            raise Unavailable(f"could not connect to {_origin_text(request.url)} in time") from None
        except httpx.TimeoutException:  # httpx's own timer fired before asyncio's
            raise Unavailable(f"no answer within {timeout_s:g} s") from None
        except AddressRefused as refused:
            raise Unavailable(refused.message) from None
        except httpx.ConnectError:
            raise Unavailable(f"could not connect to {_origin_text(request.url)}") from None
        except socket.gaierror:
            raise Unavailable(f"the host {request.url.host} does not resolve") from None
        except httpx.HTTPError as error:  # the connection broke, a malformed HTTP answer
            raise Unavailable(f"the HTTP exchange failed ({type(error).__name__})") from None

    async def _follow(self, request: httpx.Request) -> Any:
        origin = _origin(request.url)
        for _ in range(self.settings.max_redirects + 1):
            response = await self._http.send(request, stream=True)
            try:
                redirect = response.next_request
                if redirect is None:
                    return await self._json_of(response)
            finally:
                await response.aclose()
            if _origin(redirect.url) != origin:
                raise Unavailable(
                    f"the API redirected to another host ({_origin_text(redirect.url)}), "
                    "which is not followed"
                )
            request = redirect
        raise Unavailable(f"the API redirected more than {self.settings.max_redirects} times")

    async def _json_of(self, response: httpx.Response) -> Any:
        if not response.is_success:
            raise Unavailable(f"the API answered HTTP {response.status_code}")
        limit = self.settings.max_response_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise Unavailable(f"the API's answer is larger than {limit} bytes")
        try:
            return json.loads(body)
        except ValueError:  # also a body that is not UTF-8
            raise Unavailable("the API answered a body that is not JSON") from None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _origin_text(url: httpx.URL) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"
