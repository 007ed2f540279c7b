"""Fixtures that run real worker servers on 127.0.0.1 with port 0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from workers.config import WorkerSettings
from workers.server import Worker


@contextlib.asynccontextmanager
async def running_worker(models: list[dict[str, Any]], **settings: Any) -> AsyncIterator[Worker]:
    """A worker serving `models` in this event loop, stopped gracefully afterwards."""
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=models, **settings))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
