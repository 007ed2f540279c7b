"""The one signal-driven service runner that every server's `run()` uses.

start ──▶ serving ──SIGTERM/SIGINT──▶ stop (graceful) ──▶ exit 0
  │ fails: abort ──▶ exit 1 (exit 2 when its port is in use: the caller's to fix)
  └ signalled while starting (a worker loading models): cancel start, abort ──▶ exit 0
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from modelyard_server.ports import busy_address

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None:
        """Starts serving; may take long (a worker loads its models here)."""
        ...

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, finish in-flight work within the grace, stop."""
        ...

    async def abort(self) -> None:
        """Releases whatever a failed or interrupted `start` left running."""
        ...


async def run_until_signalled(service: Service, name: str) -> int:
    """Runs `service` until SIGTERM or SIGINT; the process's exit code."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        startup = asyncio.create_task(service.start(), name=f"start {name}")
        signalled = asyncio.create_task(stopping.wait())
        await asyncio.wait({startup, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            log.info("%s: stopping while starting", name)
            startup.cancel()
            await asyncio.gather(startup, return_exceptions=True)
            await service.abort()
            return 0
        if (error := startup.exception()) is not None:
            signalled.cancel()
            busy = busy_address(error)
            if busy is not None:
                log.error("%s could not start: %s is already in use", name, busy)
            else:
                log.error("%s could not start: %s", name, error)
            await service.abort()
            return 1 if busy is None else 2
        await signalled
        log.info("%s shutting down", name)
        await service.stop()
        log.info("%s stopped", name)
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
