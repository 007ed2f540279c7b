"""Leader election in etcd: the replica whose lease holds the election key leads.

Campaign: create the key bound to our lease only if it does not exist (one transaction).
The lease lives in a LeaseSession, kept alive every ttl/3 with failed refreshes retried
until the lease could expire; when the session reports its lease lost, the leader steps
down, before etcd can expire the lease, so two leaders never probe at the same time.
Followers watch the key and campaign as soon as it is deleted or expires, so a dead
leader is replaced within its TTL.

An etcd leader election (1-2 etcd election timeouts) can outlast a lease session's
budget, so a leader may step down for it although etcd kept its lease (a new etcd leader
extends every lease). It then campaigns again at once and re-takes its own key: the key
still bound to the lease it just lost and carrying its id means nobody else can lead, so
the key moves to the new lease without waiting for the old one to expire. Every request
of a campaign has a time limit of its own (etcd holds requests while it elects), and the
lost lease is revoked in the background, so a slow etcd never delays the next campaign.
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

#: between campaigns after etcd failed us or our lease was lost (capped near one etcd
#: election timeout: a replica must notice soon that etcd has a leader again)
RETRY = Backoff(initial=0.1, cap=0.5)
#: the longest one campaign request may take: etcd answers in milliseconds once it has a
#: leader, and a request that reached it as its leader died is lost, never answered (the
#: client's own timeout, 5 s, would keep this replica from campaigning that long)
REQUEST_TIMEOUT = 0.5


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
        #: the lease this replica's key was last bound to: if the key outlives the session
        #: (etcd kept the lease while we could not reach it), it is ours to re-take
        self._held: int | None = None
        self._revoking: set[asyncio.Task[None]] = set()
        self._leading = False

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads now. False as soon as its lease can no longer be
        counted on, even before the keep-alive task has run to step down (after a stall of
        the event loop, a probe or a write may run first)."""
        return self._leading and self._session is not None and self._session.alive

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
            if self._leading:  # a term ended: its failures tell nothing about this one
                retry.reset()
            self._set_leader(False, ended)
            self._release_in_background()
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
        await session.grant(timeout=REQUEST_TIMEOUT)
        async with asyncio.timeout(2 * REQUEST_TIMEOUT):  # a transaction, and maybe a get
            won = await self._take(session)
        if not won:
            await self._release()
            return None
        self._held = session.lease_id
        return session

    async def _take(self, session: LeaseSession) -> bool:
        ops = self._client.transactions
        won, _ = await self._client.transaction(
            compare=[ops.create(self._key) == 0],
            success=[ops.put(self._key, self._replica_id.encode(), session.lease)],
            failure=[],
        )
        if won:
            return True
        current = await self._client.get(self._key)
        ours = current is not None and (current.value, current.lease) == (
            self._replica_id.encode(),
            self._held,
        )
        if not ours:
            return False
        # Our key on the lease we lost: etcd still counts that lease, so no one else leads.
        # Moved to the new lease unless it changed meanwhile (the old lease's revoke landed).
        won, _ = await self._client.transaction(
            compare=[ops.mod(self._key) == current.mod_revision],
            success=[ops.put(self._key, self._replica_id.encode(), session.lease)],
            failure=[],
        )
        if won:
            log.info("replica %s re-takes its key from lease %s", self._replica_id, self._held)
        return bool(won)

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
        if leader == self._leading:
            return
        self._leading = leader
        if leader:
            log.info("replica %s leads (%s)", self._replica_id, why)
        else:
            log.warning("replica %s steps down: %s", self._replica_id, why)
        self._on_change(leader)

    async def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(revoke=True)

    def _release_in_background(self) -> None:
        """Revokes the session's lease without waiting: after a lost lease or an etcd
        failure, etcd may take seconds to answer, and the next campaign must not wait."""
        session, self._session = self._session, None
        if session is not None:
            task = asyncio.get_running_loop().create_task(session.close(revoke=True))
            self._revoking.add(task)
            task.add_done_callback(self._revoking.discard)

    async def resign(self) -> None:
        """Gives up leadership at once (on shutdown), so a follower takes over now."""
        self._set_leader(False, "resigned")
        await self._release()
        await asyncio.gather(*self._revoking, return_exceptions=True)
