"""The HTTP client's modules, imported when a service first needs them, off its event loop.

httpx 0.28 imports its command-line tool (rich, pygments, click: 4 MB) whenever those are
installed, so services import it only once a registered API is called or probed. That
import takes 0.3-0.5 s; run on the loop it would stall every call and stream in flight for
that long. In a thread it still takes the GIL, but gives it back every switch interval
(5 ms), so the loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib

#: The guarded HTTP client, and with it httpx and httpcore.
CLIENT_MODULE = "modelyard_server.http_api.client"


async def import_off_the_loop(module: str) -> None:
    """Imports `module` in a worker thread (at once if it is imported already)."""
    await asyncio.to_thread(importlib.import_module, module)
