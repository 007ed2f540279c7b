"""Leader election on a fake clock against an in-memory etcd: who leads, when a leader
steps down and why, and how followers take over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from controlplane.election import LeaderElection
from modelyard_server.aio import cancel_and_wait
from tests.support.clock import FakeClock
from tests.unit.controlplane.fake_etcd import FakeEtcd
from tests.unit.controlplane.fakes import settle, until

KEY = b"/modelyard/election/controlplane"
TTL = 3  # the lease is refreshed every 1 s


class Replica:
    """One replica's election, running, with every leadership change it reported."""

    def __init__(self, etcd: FakeEtcd, clock: FakeClock, name: str) -> None:
        self.changes: list[bool] = []
        self.election = LeaderElection(
            etcd, KEY.decode(), name, ttl=TTL, on_change=self.changes.append, clock=clock
        )
        self.task = asyncio.ensure_future(self.election.run())

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        await self.election.resign()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
async def replicas(etcd: FakeEtcd, clock: FakeClock) -> AsyncIterator[list[Replica]]:
    """Replicas a test starts; stopped afterwards."""
    started: list[Replica] = []
    yield started
    for replica in started:
        await replica.stop()


@pytest.fixture(autouse=True)
def election_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "controlplane.election")


def holder(etcd: FakeEtcd) -> bytes | None:
    kv = etcd.data.get(KEY)
    return None if kv is None else kv.value


async def start(replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, name: str) -> Replica:
    replica = Replica(etcd, clock, name)
    replicas.append(replica)
    return replica


async def test_a_replica_wins_a_vacant_election_with_its_lease_on_the_key(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock
) -> None:
    a = await start(replicas, etcd, clock, "a")

    await until(lambda: a.election.is_leader)

    assert a.changes == [True]
    assert holder(etcd) == b"a"
    (lease,) = etcd.leases
    assert etcd.data[KEY].lease == lease.id and lease.ttl == TTL


async def test_a_replica_does_not_lead_while_the_key_is_held_and_returns_its_lease(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock
) -> None:
    etcd.write(KEY, b"other")
    b = await start(replicas, etcd, clock, "b")

    await until(lambda: len(etcd.open_watches()) == 1)  # following the key

    assert not b.election.is_leader and b.changes == []
    assert holder(etcd) == b"other"
    (lease,) = etcd.leases
    assert lease.revoked  # the campaign's lease is not left to run out


async def test_a_follower_campaigns_again_when_the_key_is_deleted(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock
) -> None:
    etcd.write(KEY, b"other")
    b = await start(replicas, etcd, clock, "b")
    await until(lambda: len(etcd.open_watches()) == 1)

    etcd.remove(KEY)  # the leader resigned, or its lease expired

    await until(lambda: b.election.is_leader)
    assert holder(etcd) == b"b" and b.changes == [True]


async def test_of_two_replicas_one_leads_and_the_other_takes_over_when_it_resigns(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock
) -> None:
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: a.election.is_leader)
    b = await start(replicas, etcd, clock, "b")
    await until(lambda: len(etcd.open_watches()) == 1)
    assert not b.election.is_leader

    await a.stop()

    await until(lambda: b.election.is_leader)
    assert holder(etcd) == b"b"
    assert a.changes == [True, False] and not a.election.is_leader


async def test_the_leader_steps_down_with_its_reason_when_its_lease_is_lost(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: a.election.is_leader)
    await settle()  # its keep-alive starts counting
    (lease,) = etcd.leases
    etcd.expire(lease)  # etcd lost it (a long partition, a restore from backup)

    await clock.advance(1.0)  # the next keep-alive is answered with TTL 0
    await until(lambda: not a.election.is_leader)

    assert a.changes == [True, False]
    assert "replica a steps down: its lease is lost (the lease expired in etcd)" in caplog.text
    # and it campaigns again, after a pause, with a new lease
    await clock.advance(1.0)
    await until(lambda: a.election.is_leader)
    assert a.changes == [True, False, True] and len(etcd.leases) == 2


async def test_a_step_down_after_keep_alives_time_out_names_the_reason(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: a.election.is_leader)
    await settle()  # its keep-alive starts counting
    (lease,) = etcd.leases
    lease.refresh_failure = TimeoutError()  # str() of it is empty; the log must not be

    for _ in range(30):
        await clock.advance(0.1)

    assert a.changes[:2] == [True, False]

    assert (
        "replica a steps down: its lease is lost (no keep-alive answered before the lease "
        "could expire (etcd did not answer in time))" in caplog.text
    )
    assert lease.revoked  # given back, in case etcd still counts it


async def test_while_etcd_is_unreachable_a_replica_retries_with_backoff(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    etcd.failure = ConnectionError("etcd away")
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: "campaigning again" in caplog.text)
    assert "election: etcd failed: ConnectionError: etcd away; campaigning again in" in (
        caplog.text
    )

    await settle()
    await clock.advance(0.05)  # the first retry waits about 0.1 s, not at once
    assert etcd.calls.count("lease") == 1 and not a.election.is_leader
    await clock.advance(0.1)
    assert etcd.calls.count("lease") == 2
    etcd.failure = None
    await clock.advance(0.3)  # the second retry waits about 0.2 s

    await until(lambda: a.election.is_leader)
    assert a.changes == [True]


async def test_resign_revokes_the_lease_so_the_key_goes_at_once(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: a.election.is_leader)

    await cancel_and_wait(a.task)
    await a.election.resign()

    (lease,) = etcd.leases
    assert lease.revoked and holder(etcd) is None
    assert a.changes == [True, False] and not a.election.is_leader
    assert "replica a steps down: the election stopped" in caplog.text


async def test_a_leader_that_stepped_down_during_an_etcd_election_re_takes_its_own_key(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # etcd electing a leader for longer than the session's budget: the leader steps down,
    # but etcd keeps (and, once it has a leader, extends) the lease that holds the key
    a = await start(replicas, etcd, clock, "a")
    await until(lambda: a.election.is_leader)
    await settle()
    (old,) = etcd.leases
    old.refresh_failure = TimeoutError()
    etcd.failure = ConnectionError("etcd electing")  # revoking the old lease fails too
    for _ in range(30):
        await clock.advance(0.1)
    assert a.changes == [True, False]
    assert holder(etcd) == b"a" and etcd.data[KEY].lease == old.id  # the key outlived it

    etcd.failure = None  # etcd has a leader again; the old lease never expired
    for _ in range(10):
        await clock.advance(0.1)

    await until(lambda: a.election.is_leader)
    assert a.changes == [True, False, True]
    assert etcd.data[KEY].lease == etcd.leases[-1].id != old.id  # moved to the new lease
    assert not old.expired
    assert f"replica a re-takes its key from lease {old.id}" in caplog.text


async def test_a_key_with_the_same_id_on_a_lease_this_replica_never_held_is_not_taken(
    replicas: list[Replica], etcd: FakeEtcd, clock: FakeClock
) -> None:
    # a replica restarted under the same id, or another with a duplicate id: it cannot
    # tell that lease's holder is gone, so it waits for the key to go like any follower
    etcd.write(KEY, b"a", lease=999)
    a = await start(replicas, etcd, clock, "a")

    await until(lambda: len(etcd.open_watches()) == 1)

    assert not a.election.is_leader and etcd.data[KEY].lease == 999
