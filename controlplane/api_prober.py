"""Active health checks of registered third-party APIs (the leader's job, as worker probes).

Every `interval` seconds: GET the registration's health URL (any 2xx is healthy), or when
it has none, open a TCP connection to the API's host:port. A failing registration leaves
its model's endpoint sets until a check passes again; callers cool one down on their own
failures too (the passive half, in modelyard_server.http_api).

Both connect through the SSRF guard of the services' own HTTP client
(`http_api.client.GuardedBackend`): the host is resolved, every address checked, and the
connection made to a checked address, so a name that rebinds to an internal address is
never reached. A refused address fails the check. Each check opens a new connection (no
keep-alive): it asks whether the API can be reached now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from controlplane.api_view import api_address
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import cancel_and_wait, describe_error
from modelyard_server.http_api.lazy_import import CLIENT_MODULE, import_off_the_loop
from modelyard_server.http_api.record import RegistrationRecord
from modelyard_server.http_api.render import render_url
from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.workerinfo import WorkerHealth

if TYPE_CHECKING:
    import httpx

# httpx and the guarded client are imported when a registration is first probed, off the
# loop (`http_api.lazy_import`): a control plane with no registration never holds them.

log = logging.getLogger(__name__)

HealthListener = Callable[[str, WorkerHealth], None]


class ApiProber:
    def __init__(
        self,
        record: RegistrationRecord,
        registration: int,
        on_health: HealthListener,
        *,
        allowed_networks: Sequence[str],
        interval: float,
        timeout: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.record = record
        self.registration = registration
        self._on_health = on_health
        self._allowed = tuple(allowed_networks)
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._last: bool | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"probe-{self.record.registration_id}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        await import_off_the_loop(CLIENT_MODULE)
        import httpx

        from modelyard_server.http_api.client import GuardedTransport

        guarded = HttpApiSettings(allowed_networks=list(self._allowed), max_keepalive_connections=0)
        transport = GuardedTransport(guarded)
        async with httpx.AsyncClient(
            transport=transport, follow_redirects=False, trust_env=False
        ) as http:
            while True:
                self._report(await self._passes(http))
                await self._clock.sleep(self._interval)

    async def _passes(self, http: httpx.AsyncClient) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                if self.record.api.health_url:
                    await self._get(http, self.record.api.health_url)
                else:
                    await self._connect()
            return True
        except asyncio.CancelledError:
            raise
        except Exception as error:  # refused, unreachable, slow, not 2xx: unhealthy
            if self._last is not False:  # once per failure, not once per check
                log.info(
                    "registration %s (%s) fails its health check: %s",
                    self.record.registration_id,
                    self.record.model,
                    describe_error(error),
                )
            return False

    async def _get(self, http: httpx.AsyncClient, url: str) -> None:
        # only the status matters: the body is never read (it may be of any size)
        async with http.stream("GET", url) as response:
            if not response.is_success:
                raise _Unhealthy(f"GET {urlsplit(url).path or '/'} answered {response.status_code}")

    async def _connect(self) -> None:
        url = urlsplit(render_url(self.record.api.url_template, model=self.record.model))
        from modelyard_server.http_api.client import GuardedBackend  # imported by _run

        backend = GuardedBackend(self._allowed)
        stream = await backend.connect_tcp(url.hostname or "", _port(url), timeout=self._timeout)
        await stream.aclose()

    def _report(self, healthy: bool) -> None:
        if healthy == self._last:
            return
        if healthy and self._last is not None:
            log.info(
                "registration %s (%s) at %s passes its health check again",
                self.record.registration_id,
                self.record.model,
                api_address(self.record),
            )
        self._last = healthy
        health = WorkerHealth(
            reachable=healthy, observed_at=time.time(), registration=self.registration
        )
        self._on_health(self.record.registration_id, health)


class _Unhealthy(Exception):
    pass


def _port(url: SplitResult) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


class ApiProberPool:
    """One prober per registration, restarted when what it checks changes (not when the
    registration only went offline or online: it is checked either way, so List shows
    its health and it rejoins at once)."""

    def __init__(
        self,
        on_health: HealthListener,
        *,
        allowed_networks: Sequence[str],
        interval: float,
        timeout: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._on_health = on_health
        self._allowed = tuple(allowed_networks)
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._probers: dict[str, ApiProber] = {}

    async def ensure(self, record: RegistrationRecord, registration: int) -> None:
        current = self._probers.get(record.registration_id)
        if current is not None and _checked(current.record, current.registration) == _checked(
            record, registration
        ):
            return
        await self.stop(record.registration_id)
        prober = ApiProber(
            record,
            registration,
            self._on_health,
            allowed_networks=self._allowed,
            interval=self._interval,
            timeout=self._timeout,
            clock=self._clock,
        )
        self._probers[record.registration_id] = prober
        prober.start()

    async def stop(self, registration_id: str) -> None:
        prober = self._probers.pop(registration_id, None)
        if prober is not None:
            await prober.stop()

    async def stop_all(self) -> None:
        for registration_id in list(self._probers):
            await self.stop(registration_id)


def _checked(record: RegistrationRecord, registration: int) -> tuple[object, ...]:
    return (record.model, record.api, registration)
