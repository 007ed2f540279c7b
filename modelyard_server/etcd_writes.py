"""Admin writes to etcd that ride out an etcd leader election, and fail as UNAVAILABLE.

An etcd cluster that loses its leader refuses or holds writes for one to two election
timeouts (about 1-2 s with etcd's defaults), and a client connected to the member that died
fails at once and reconnects to another. A drain or a graph deploy sent then should wait
that out rather than fail, and a write etcd cannot take in time should tell the caller
"etcd is unavailable, retry" (UNAVAILABLE), not INTERNAL. Only idempotent writes (a put of
a whole value, a delete) come here: an attempt abandoned after etcd applied it does no
harm when sent again.

    await retried(lambda: client.put(key, value), what="drain worker 'w1'")

The caller's gRPC deadline, when shorter than `within`, cancels the wait earlier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aetcd

from modelyard.backoff import Backoff
from modelyard.errors import InvalidArgument, Unavailable
from modelyard_server.aio import describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long an admin write may wait for etcd (a failover takes 1-2 election timeouts)
WITHIN = 5.0
#: one attempt: a write that reached etcd just as its leader died is lost, and etcd would
#: answer it only after its own request timeout (5 s and more); sent again, it lands
ATTEMPT = 1.0
RETRY = Backoff(initial=0.05, cap=0.5)
#: what etcd may recover from by itself: unreachable, electing ("no leader", "leader
#: changed", "request timed out" all arrive as UNAVAILABLE), or slow
TRANSIENT = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, TimeoutError, OSError)


async def retried(
    write: Callable[[], Awaitable[T]],
    *,
    what: str,
    within: float = WITHIN,
    attempt: float = ATTEMPT,
    backoff: Backoff = RETRY,
) -> T:
    """Runs `write` until it succeeds, again after each transient failure, for at most
    `within` seconds. Raises Unavailable (with etcd's last answer) when time runs out or
    etcd refuses for good, InvalidArgument when the value is too large for etcd."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    retry = backoff.counter()
    while True:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(attempt, max(left, 0.0))):
                return await write()
        except TRANSIENT as error:
            problem = describe_error(error)
        except aetcd.ClientError as error:
            raise _refused(what, error) from error
        pause = retry.next()
        if loop.time() + pause >= deadline:
            raise Unavailable(
                f"etcd did not take the write to {what} within {within:g} s ({problem}); retry"
            )
        log.info("etcd did not take the write to %s (%s); again in %.2f s", what, problem, pause)
        await asyncio.sleep(pause)


def _refused(what: str, error: aetcd.ClientError) -> Exception:
    text = str(error)
    if "too large" in text or "larger than max" in text:  # etcd's limit (1.5 MiB by default)
        return InvalidArgument(f"too large to store: etcd refused the write to {what} ({text})")
    return Unavailable(f"etcd refused the write to {what}: {describe_error(error)}")
