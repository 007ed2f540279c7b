"""Small asyncio helpers shared by the services: reliable task cancellation, and etcd
errors in a few words."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from modelyard_server.etcd import hint_for

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancels `task` until it ends. Once is not always enough: on Python 3.11,
    `asyncio.wait_for` (which aetcd uses to create watches) drops a cancellation that arrives
    just as what it waits for completes, and the task would carry on as if never cancelled.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s ended with an error", task.get_name(), exc_info=error)


def describe_error(error: BaseException) -> str:
    """An etcd failure in a few words, for logs."""
    if isinstance(error, TimeoutError):
        return "etcd did not answer in time"
    described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    hint = hint_for(str(error))
    return f"{described} ({hint})" if hint else described
