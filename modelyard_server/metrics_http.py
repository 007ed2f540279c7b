"""A service's Prometheus /metrics endpoint: its own registry, on its own port and thread.

    metrics = MetricsHttpServer(registry, host=settings.host, port=settings.metrics_port)
    port = metrics.start()       # the bound port (0 picks a free one)
    ...
    await metrics.stop()         # the port and thread do not outlive the service

The exposition is OpenMetrics, the format that carries exemplars (the trace id on latency
buckets), unless the scraper asks for the classic text format only: Prometheus asks for
OpenMetrics first, and `curl` (which asks for nothing in particular) sees the exemplars.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST

_OPENMETRICS = "application/openmetrics-text"
_CLASSIC = "text/plain"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MetricsHttpServer:
    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._running: tuple[WSGIServer, threading.Thread] | None = None

    @property
    def port(self) -> int | None:
        """The bound port while it serves, else None."""
        if self._running is None:
            return None
        return int(self._running[0].server_address[1])

    def start(self) -> int:
        """Listens and serves on a daemon thread; the bound port."""
        if self._running is not None:
            raise RuntimeError("the /metrics server is already running")
        httpd, thread = start_http_server(self._port, addr=self._host, registry=self._registry)
        httpd.set_app(_openmetrics_by_default(httpd.get_app()))
        self._running = httpd, thread
        return int(httpd.server_address[1])

    async def stop(self) -> None:
        """Closes the port and joins the thread (a restarted service may want the port)."""
        if self._running is None:
            return
        httpd, thread = self._running
        self._running = None
        # `shutdown` blocks until serve_forever notices (up to its 0.5 s poll): off the loop.
        await asyncio.to_thread(httpd.shutdown)
        httpd.server_close()
        await asyncio.to_thread(thread.join)


def _openmetrics_by_default(app: WsgiApp | None) -> WsgiApp:
    """The client library serves OpenMetrics only to a scraper that names it; this makes it
    the answer to every scraper that does not ask for the classic format by name."""
    assert app is not None

    def negotiated(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        accept = environ.get("HTTP_ACCEPT", "")
        types = {part.split(";")[0].strip() for part in accept.split(",")}
        if _OPENMETRICS not in types and _CLASSIC not in types:
            environ = {**environ, "HTTP_ACCEPT": CONTENT_TYPE_LATEST}
        return app(environ, start_response)

    return negotiated
