"""Leader election in etcd: the replica whose lease holds the election key leads.

Campaign: create the key bound to our lease only if it does not exist (one transaction).
The leader keeps its lease alive every ttl/3; if a refresh fails it steps down at once
(before the lease can expire, so two leaders never probe at the same time for long).
Followers watch the key and campaign as soon as it is deleted or expires, so a dead
leader is replaced within its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(
        self,
        client: Any,
        key: str,
        replica_id: str,
        *,
        ttl: float = 2.0,
        on_change: Callable[[bool], None],
    ) -> None:
        self._client = client
        self._key = key.encode()
        self._replica_id = replica_id.encode()
        self._ttl = max(1, round(ttl))
        self._on_change = on_change
        self._lease: Any = None
        self.is_leader = False

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                if await self._campaign():
                    backoff = 0.1
                    await self._lead()
                else:
                    await self._wait_for_vacancy()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # etcd unreachable or the lease was lost
                log.warning("election: %s; retrying in %.1f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._set_leader(False)

    async def _campaign(self) -> bool:
        lease = await self._client.lease(self._ttl)
        ops = self._client.transactions
        won, _ = await self._client.transaction(
            compare=[ops.create(self._key) == 0],
            success=[ops.put(self._key, self._replica_id, lease)],
            failure=[],
        )
        if not won:
            await lease.revoke()
            return False
        self._lease = lease
        return True

    async def _lead(self) -> None:
        self._set_leader(True)
        log.info("this replica leads (lease %s)", self._lease.id)
        while True:
            await asyncio.sleep(self._ttl / 3)
            # bounded: a refresh that hangs past the TTL must not let us lead on without a lease
            reply = await asyncio.wait_for(self._lease.refresh(), self._ttl / 3)
            if reply is None or reply.TTL <= 0:
                raise RuntimeError("the leader's lease expired")

    async def _wait_for_vacancy(self) -> None:
        current = await self._client.get(self._key)
        if current is None:
            return  # vacated between our campaign and now: campaign again
        watch = await self._client.watch(self._key, start_revision=current.mod_revision + 1)
        async for event in watch:
            if event.kind == "DELETE":
                await watch.cancel()
                return

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            self._on_change(leader)

    async def resign(self) -> None:
        """Gives up leadership at once (on shutdown), so a follower takes over now."""
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.revoke()
            self._lease = None
        self._set_leader(False)
