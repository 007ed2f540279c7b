"""The gateway process: the OpenAI-compatible HTTP API on uvicorn, in front of the routed
client (served models) and a composer (graphs). It keeps no state of its own: run as many
as you like, anywhere that reaches the control plane and the workers.

With `tls` set it serves HTTPS (and with client_auth requires client certificates), and
its gRPC channels trust the same CA and present the same certificate; with `auth.api_keys`
set every route but /health needs a key; `auth.token` goes on its own calls.

Lifecycle (`modelyard_server.runner.run_until_signalled`): start binds the port and
serves; stop (SIGTERM) makes /health answer 503, stops accepting connections, lets the
requests and streams in flight finish within `grace_seconds`, cancels what is left, and
closes the clients. uvicorn runs without its own signal handling: the runner owns the
signals, as for every modelyard service.

Telemetry, as every modelyard service's: with tracing on, a server span per request whose
context goes on with the gRPC calls to workers and composer (`gateway.tracing`); with
`metrics_port` set, /metrics on that port (`gateway.metrics`). Off, neither middleware is
in the request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import ssl
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from gateway.api_keys import ApiKeys
from gateway.app import Health, build_app
from gateway.metrics import HttpMetrics
from gateway.models import Catalog, DeployedGraphs, ModelSource, RegisteredApis, ServedModels
from gateway.service import OpenAIService
from gateway.settings import GatewaySettings
from gateway.tracing import traced
from modelyard.composer_client import AsyncComposerClient
from modelyard.routed_client import RoutedClient
from modelyard_server.http_api.caller import HttpApiCaller
from modelyard_server.portfile import write_port_file
from modelyard_server.runner import run_until_signalled
from modelyard_server.service_telemetry import ServiceTelemetry
from modelyard_server.tls import TlsSettings, channel_credentials

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.telemetry = ServiceTelemetry(
            settings.telemetry,
            service_name="modelyard-gateway",
            host=settings.host,
            metrics_port=settings.metrics_port,
        )
        # the gateway's own calls: TLS and token as the composer's (tls, auth.token), and
        # the request's trace carried on
        credentials = channel_credentials(settings.tls)
        token = settings.auth.outgoing_token()
        tracing = self.telemetry.client_interceptors()
        self.outside_apis = HttpApiCaller(settings.http_api, tracer=self.telemetry.tracer)
        self.routed = RoutedClient(
            settings.controlplanes,
            policy=settings.policy,
            **settings.routing.client_options(self.telemetry.tracer),
            timeout=settings.request_timeout,
            interceptors=tracing,
            credentials=credentials,
            token=token,
            outside_apis=self.outside_apis,
        )
        self.composer = (
            AsyncComposerClient(
                settings.composer, interceptors=tracing, credentials=credentials, token=token
            )
            if settings.composer
            else None
        )
        self.served = ServedModels(settings.controlplanes, credentials=credentials)
        self.registered = RegisteredApis(settings.controlplanes, credentials=credentials)
        sources: list[ModelSource] = [self.served, self.registered]
        if self.composer is not None and settings.composer:
            sources.append(DeployedGraphs(self.composer, settings.composer))
        self.catalog = Catalog(
            sources,
            ttl_s=settings.catalog_ttl,
            miss_refresh_s=settings.catalog_miss_refresh,
            forget_after_s=settings.catalog_forget_after,
        )
        service = OpenAIService(
            self.catalog, self.routed, self.composer, timeout=settings.request_timeout
        )
        self.health = Health()
        keys = ApiKeys(settings.auth.keys())
        if keys.required and not settings.tls.enabled:
            log.warning(
                "API keys are required over plain HTTP: they cross the network in the clear "
                "unless TLS ends in front of the gateway (or set tls.cert_file)"
            )
        app = build_app(
            service, max_body_bytes=settings.max_body_bytes, health=self.health, keys=keys
        )
        self.http = uvicorn.Server(
            uvicorn.Config(
                _observed(app, self.telemetry, counted=settings.metrics_port >= 0),
                lifespan="off",
                # httptools (C) parses requests and frames chunks; uvicorn's other choice,
                # h11, is pure Python: ~300 us more per streamed answer before its first
                # token, ~5 us more per chunk
                http="httptools",
                log_config=None,  # the process's logging, as configured by the command
                access_log=False,
                # whole seconds (uvicorn's type): a grace is never cut short
                timeout_graceful_shutdown=math.ceil(settings.grace_seconds),
                **_https(settings.tls),
            )
        )
        self.port = 0
        self._socket: socket.socket | None = None
        self._ticking: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.tls.enabled else "http"
        return f"{scheme}://{self.address}/v1"

    async def start(self) -> None:
        self._socket = _bind(self.settings.host, self.settings.port)
        self.port = int(self._socket.getsockname()[1])
        config = self.http.config
        config.load()
        self.http.lifespan = config.lifespan_class(config)
        await self.http.startup(sockets=[self._socket])
        # uvicorn's main loop only refreshes the Date header and watches should_exit
        self._ticking = asyncio.create_task(self.http.main_loop(), name="gateway http")
        self.telemetry.start_metrics()
        write_port_file(self.settings.port_file, self.port)
        log.info("gateway serving the OpenAI API on %s", self.base_url)

    async def stop(self) -> None:
        """/health 503, no new connections, in-flight requests get `grace_seconds`."""
        self.health.serving = False
        self.http.should_exit = True
        if self._ticking is not None:
            await self._ticking
        await self.http.shutdown(sockets=[self._socket] if self._socket else None)
        await self._release()

    async def abort(self) -> None:
        """After a failed or interrupted start: closes whatever it opened, at once."""
        self.http.should_exit = True
        if self._ticking is not None:
            await self._ticking
        for server in getattr(self.http, "servers", []):
            server.close()
        if self._socket is not None:
            self._socket.close()
        await self._release()

    async def _release(self) -> None:
        await self.routed.close()
        await self.outside_apis.aclose()
        await self.served.close()
        await self.registered.close()
        if self.composer is not None:
            with contextlib.suppress(Exception):
                await self.composer.close()
        await self.telemetry.close()


def _observed(app: FastAPI, telemetry: ServiceTelemetry, *, counted: bool) -> ASGIApp:
    """`app` counted (when /metrics is served: nobody could read counts otherwise) and
    traced (when tracing is on), the span outermost so that each latency has the request's
    trace id as exemplar; `app` itself when neither, at no cost per request."""
    observed: ASGIApp = app
    if counted:
        exemplars = telemetry.tracing.enabled
        observed = HttpMetrics(observed, telemetry.registry, routes=app.routes, exemplars=exemplars)
    if telemetry.tracing.provider is not None:
        observed = traced(observed, telemetry.tracing.provider, routes=app.routes)
    return observed


def _https(tls: TlsSettings) -> dict[str, Any]:
    """uvicorn's TLS options: none for plain HTTP; with client_auth, a client certificate
    signed by ca_file is required (the TLS handshake refuses any other)."""
    if tls.cert_file is None:
        return {}
    return {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
        "ssl_ca_certs": str(tls.ca_file) if tls.ca_file else None,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.client_auth else ssl.CERT_NONE,
    }


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket; a port in use is the runner's "already in use" (exit 2).

    Made with the protocol named (IPPROTO_TCP, not 0): only then does asyncio set
    TCP_NODELAY on each connection, without which every response waits out the client's
    delayed ACK (about 40 ms) behind Nagle's algorithm.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            # the wording modelyard_server.ports.busy_address recognises
            raise OSError(error.errno, f"Failed to bind to address {host}:{port}; in use") from None
        raise
    return sock


async def run(settings: GatewaySettings) -> int:
    return await run_until_signalled(Gateway(settings), "gateway")
