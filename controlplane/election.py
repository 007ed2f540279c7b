"""Leader election in etcd: the replica whose lease holds the election key leads.

Campaign: create the key bound to our lease only if it does not exist (one transaction).
The lease lives in a LeaseSession, kept alive every ttl/3 with failed refreshes retried
until the lease could expire; when the session reports its lease lost, the leader steps
down, before etcd can expire the lease, so two leaders never probe at the same time.
Followers watch the key and campaign as soon as it is deleted or expires, so a dead
leader is replaced within its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import describe_error
from modelyard_server.lease import LeaseSession

log = logging.getLogger(__name__)

#: between campaigns after etcd failed us or our lease was lost
RETRY = Backoff(initial=0.1, cap=2.0)


class LeaderElection:
    """Campaigns while `run` runs; `on_change(leading)` is told of every change.

    After cancelling `run` (shutdown) call `resign`, which revokes the lease so a follower
    takes over at once instead of after the TTL.
    """

    def __init__(
        self,
        client: Any,
        key: str,
        replica_id: str,
        *,
        ttl: float = 2.0,
        on_change: Callable[[bool], None],
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff = RETRY,
    ) -> None:
        self._client = client
        self._key = key.encode()
        self._replica_id = replica_id
        self._ttl = ttl
        self._on_change = on_change
        self._clock = clock
        self._backoff = backoff
        self._session: LeaseSession | None = None
        self.is_leader = False

    async def run(self) -> None:
        retry = self._backoff.counter(clock=self._clock)
        while True:
            try:
                ended = await self._term()
            except asyncio.CancelledError:
                # the session stays for `resign` to revoke; without `run` nobody would
                # notice it being lost, so this replica must not count as leading
                self._set_leader(False, "the election stopped")
                raise
            except Exception as error:  # etcd unreachable, or the watch broke
                ended = f"etcd failed: {describe_error(error)}"
            else:
                if ended is None:  # the key is vacant: campaign again at once
                    retry.reset()
                    continue
            self._set_leader(False, ended)
            await self._release()
            delay = retry.next()
            log.warning("election: %s; campaigning again in %.2f s", ended, delay)
            await self._clock.sleep(delay)

    async def _term(self) -> str | None:
        """One campaign. Won: leads until the lease is lost and says why. Lost: follows
        until the key is vacant (None) or the watch on it ends (why)."""
        session = await self._campaign()
        if session is None:
            return await self._wait_for_vacancy()
        self._set_leader(True, f"lease {session.lease_id}")
        return f"its lease is lost ({await session.lost()})"

    async def _campaign(self) -> LeaseSession | None:
        session = LeaseSession(self._client, ttl=self._ttl, clock=self._clock, name="election")
        self._session = session  # from now on `resign` (or `_release`) cleans it up
        await session.grant()
        ops = self._client.transactions
        won, _ = await self._client.transaction(
            compare=[ops.create(self._key) == 0],
            success=[ops.put(self._key, self._replica_id.encode(), session.lease)],
            failure=[],
        )
        if not won:
            await self._release()
            return None
        return session

    async def _wait_for_vacancy(self) -> str | None:
        current = await self._client.get(self._key)
        if current is None:
            return None  # vacated between our campaign and now
        watch = await self._client.watch(self._key, start_revision=current.mod_revision + 1)
        try:
            async for event in watch:
                if event.kind == "DELETE":
                    return None
        finally:
            with contextlib.suppress(Exception):  # a broken watch may not cancel cleanly
                await watch.cancel()
        return "the watch on the election key ended"

    def _set_leader(self, leader: bool, why: str) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        if leader:
            log.info("replica %s leads (%s)", self._replica_id, why)
        else:
            log.warning("replica %s steps down: %s", self._replica_id, why)
        self._on_change(leader)

    async def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(revoke=True)

    async def resign(self) -> None:
        """Gives up leadership at once (on shutdown), so a follower takes over now."""
        self._set_leader(False, "resigned")
        await self._release()
