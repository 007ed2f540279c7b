"""LeaseSession on a fake clock with a fake lease: refreshed every ttl/3, retried through
an etcd blip shorter than the lease, lost (with a reason) before the lease could expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelyard_server.lease import ATTEMPT, LeaseSession
from tests.support.clock import FakeClock
from tests.unit.controlplane.fake_etcd import FakeEtcd, FakeLease
from tests.unit.controlplane.fakes import settle

TTL = 3  # refreshes every 1 s; lost 0.5 s (ttl/6) before the lease could expire


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
async def session(clock: FakeClock, etcd: FakeEtcd) -> AsyncIterator[LeaseSession]:
    session = LeaseSession(etcd, ttl=TTL, clock=clock, name="test")
    await session.grant()
    yield session
    await session.close()


def lease_of(etcd: FakeEtcd) -> FakeLease:
    (lease,) = etcd.leases
    return lease


async def test_grant_takes_a_lease_of_the_ttl_from_etcd(
    session: LeaseSession, etcd: FakeEtcd
) -> None:
    lease = lease_of(etcd)

    assert (lease.ttl, session.lease, session.lease_id) == (TTL, lease, lease.id)
    assert session.alive


async def test_the_lease_is_refreshed_every_third_of_its_ttl(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease = lease_of(etcd)

    await clock.advance(0.9)
    assert lease.refreshes == 0
    await clock.advance(0.1)
    assert lease.refreshes == 1
    await clock.advance(1.0)
    assert lease.refreshes == 2
    await clock.advance(3.0)
    assert lease.refreshes == 5
    assert session.alive


async def test_a_refresh_outage_shorter_than_the_lease_is_retried_and_survived(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease = lease_of(etcd)
    lost = asyncio.ensure_future(session.lost())
    lease.refresh_failure = ConnectionError("etcd is electing a leader")

    await clock.advance(1.0)  # the scheduled refresh fails...
    for _ in range(10):  # ...and is retried every 0.1-0.3 s, for 1 s
        await clock.advance(0.1)
    assert lease.refreshes >= 4
    lease.refresh_failure = None
    await clock.advance(0.3)  # 2.3 s in: still within ttl - margin (2.5 s)

    assert session.alive and not lost.done()
    refreshed = lease.refreshes
    await clock.advance(1.0)  # back on schedule
    assert lease.refreshes == refreshed + 1
    await clock.advance(3.0)  # the refresh that worked extended the lease
    assert session.alive and not lost.done()
    lost.cancel()


async def test_the_session_is_lost_once_the_lease_could_have_expired(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease_of(etcd).refresh_failure = ConnectionError("etcd away")
    lost = asyncio.ensure_future(session.lost())

    await clock.advance(2.45)
    assert not lost.done() and session.alive
    await clock.advance(0.1)  # past ttl - margin since the grant: etcd may expire it now

    assert lost.done()
    assert lost.result() == (
        "no keep-alive answered before the lease could expire (ConnectionError: etcd away)"
    )
    assert not session.alive


async def test_a_refresh_that_hangs_counts_as_unanswered(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease_of(etcd).hang = True
    lost = asyncio.ensure_future(session.lost())

    await clock.advance(2.45)
    assert not lost.done()
    await clock.advance(0.1)

    assert lost.done()
    assert lost.result() == (
        "no keep-alive answered before the lease could expire (etcd did not answer in time)"
    )


async def test_a_refresh_answered_with_ttl_zero_means_the_lease_is_gone(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    etcd.expire(lease_of(etcd))
    lost = asyncio.ensure_future(session.lost())

    await clock.advance(1.0)

    assert lost.done() and lost.result() == "the lease expired in etcd"


async def test_close_stops_refreshing_and_revokes(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease = lease_of(etcd)

    await session.close()
    await clock.advance(5.0)

    assert lease.revoked and lease.refreshes == 0
    assert await session.lost() == "closed"
    assert session.lease is None and not session.alive


async def test_close_without_revoke_leaves_the_lease_to_run_out(
    session: LeaseSession, etcd: FakeEtcd
) -> None:
    await session.close(revoke=False)

    assert not lease_of(etcd).revoked


async def test_a_revoke_that_fails_is_not_an_error_of_close(
    session: LeaseSession, etcd: FakeEtcd
) -> None:
    etcd.failure = ConnectionError("etcd away")

    await session.close()  # the keys go when the lease runs out

    assert not lease_of(etcd).revoked


async def test_a_grant_etcd_cannot_answer_raises(clock: FakeClock, etcd: FakeEtcd) -> None:
    etcd.failure = ConnectionError("etcd away")
    session = LeaseSession(etcd, ttl=TTL, clock=clock)

    with pytest.raises(ConnectionError):
        await session.grant()
    assert not session.alive


async def test_a_refresh_lost_in_an_etcd_election_is_sent_again_and_the_lease_survives(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    # a keep-alive that reached etcd just as its leader died is never answered; waiting for
    # it would spend the whole budget although etcd has a new leader a moment later
    lease = lease_of(etcd)
    lost = asyncio.ensure_future(session.lost())
    lease.hang = True
    await clock.advance(1.0)  # the scheduled refresh goes out, and hangs
    await clock.advance(ATTEMPT / 2)
    lease.hang = False  # etcd has a leader again
    for _ in range(10):
        await clock.advance(0.1)  # the hung one is abandoned and another one sent

    assert lease.refreshes >= 2
    await clock.advance(3.0)  # well past when the first refresh's budget would have ended
    assert session.alive and not lost.done()
    lost.cancel()


async def handed_over(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> tuple[FakeLease, LeaseSession]:
    """The session's lease, and a new session to resume it: the first lost track of the
    lease; etcd did not."""
    lease = lease_of(etcd)
    await session.close(revoke=False)
    return lease, LeaseSession(etcd, ttl=TTL, clock=clock)


async def resuming_while_failing(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock, failure: Exception, timeout: float
) -> tuple[FakeLease, LeaseSession, asyncio.Future[bool]]:
    """A new session resuming the lease with `timeout` while every refresh raises `failure`."""
    lease, later = await handed_over(session, etcd, clock)
    lease.refresh_failure = failure
    return lease, later, asyncio.ensure_future(later.resume(lease, timeout=timeout))


async def ticks(clock: FakeClock, count: int) -> None:
    """`count` steps of 0.1 s, each letting due sleepers run (as time passes for real)."""
    for _ in range(count):
        await clock.advance(0.1)


async def test_resume_keeps_alive_a_lease_etcd_still_has(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease, later = await handed_over(session, etcd, clock)

    assert await later.resume(lease)

    assert later.alive and later.lease is lease
    refreshed = lease.refreshes
    await settle()  # its keep-alive starts counting
    await clock.advance(1.0)
    assert lease.refreshes == refreshed + 1  # on the usual schedule from now on
    await later.close()


async def test_resume_refuses_a_lease_etcd_no_longer_has(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    lease, later = await handed_over(session, etcd, clock)
    etcd.expire(lease)

    assert not await later.resume(lease)
    assert not later.alive


async def test_resume_tries_again_while_etcd_elects_a_leader(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    # The first refresh can be refused at once ("no leader") or go to a member that died:
    # one such answer must not make the worker give up a lease etcd still counts.
    no_leader = ConnectionError("etcdserver: no leader")
    lease, later, resumed = await resuming_while_failing(session, etcd, clock, no_leader, 2.0)
    await ticks(clock, 3)
    assert not resumed.done() and lease.refreshes >= 2
    lease.refresh_failure = None
    lease.hang = True  # the next one goes to the dead leader, and is abandoned
    await clock.advance(ATTEMPT)
    lease.hang = False
    await ticks(clock, 10)  # the hung attempt is abandoned, then one more within 0.3 s

    assert resumed.done() and resumed.result()
    assert later.alive and later.lease is lease
    await later.close()


async def test_resume_raises_the_last_failure_once_its_timeout_has_passed(
    session: LeaseSession, etcd: FakeEtcd, clock: FakeClock
) -> None:
    away = ConnectionError("etcd is unreachable")
    lease, later, resumed = await resuming_while_failing(session, etcd, clock, away, 1.0)
    await ticks(clock, 7)  # it gives up when the next try (0.1-0.25 s on) would be too late
    assert not resumed.done() and lease.refreshes >= 3
    await ticks(clock, 4)

    assert resumed.done()
    with pytest.raises(ConnectionError, match="unreachable"):
        resumed.result()
    assert not later.alive
