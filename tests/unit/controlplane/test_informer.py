"""The informer against an in-memory etcd on a fake clock: list, watch, list again after
the watch breaks (reporting every difference), retry with backoff while etcd is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelyard_server.aio import cancel_and_wait
from modelyard_server.informer import Entry, Informer
from tests.support.clock import FakeClock
from tests.unit.controlplane.fake_etcd import FakeEtcd
from tests.unit.controlplane.fakes import settle, until

PREFIX = "/modelyard/workers/"


class Changes:
    def __init__(self) -> None:
        self.names: list[str] = []

    def take(self) -> list[str]:
        taken = sorted(self.names)
        self.names.clear()  # in place: the informer holds this list's append
        return taken


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def informer(
    etcd: FakeEtcd, clock: FakeClock, changes: Changes
) -> AsyncIterator[Informer[str]]:
    etcd.write(b"/modelyard/workers/a", b"A")
    etcd.write(b"/modelyard/elsewhere", b"not under the prefix")
    informer: Informer[str] = Informer(etcd, PREFIX, _decode, changes.names.append, clock=clock)
    task = asyncio.ensure_future(informer.run())
    yield informer
    await cancel_and_wait(task)


def _decode(raw: bytes) -> str:
    if raw == b"garbage":
        raise ValueError("not a worker")
    return raw.decode()


def values(informer: Informer[str]) -> dict[str, str]:
    return {name: entry.value for name, entry in informer.cache.items()}


async def watching(etcd: FakeEtcd) -> None:
    await until(lambda: len(etcd.open_watches()) == 1)


async def test_it_lists_the_prefix_then_follows_changes(
    informer: Informer[str], etcd: FakeEtcd, changes: Changes
) -> None:
    await watching(etcd)
    assert informer.synced.is_set()
    assert values(informer) == {"a": "A"}
    assert changes.take() == ["a"]

    await etcd.put(b"/modelyard/workers/b", b"B")
    await etcd.put(b"/modelyard/workers/a", b"A2")
    await etcd.delete(b"/modelyard/workers/a")
    await settle()

    assert values(informer) == {"b": "B"}
    assert changes.take() == ["a", "a", "b"]
    created = etcd.data[b"/modelyard/workers/b"]
    assert informer.cache["b"] == Entry("B", created.create_revision, created.mod_revision)


async def test_a_value_that_does_not_decode_counts_as_absent(
    informer: Informer[str], etcd: FakeEtcd, changes: Changes
) -> None:
    await watching(etcd)
    changes.take()

    await etcd.put(b"/modelyard/workers/a", b"garbage")
    await settle()

    assert values(informer) == {}
    assert changes.take() == ["a"]


async def test_after_the_watch_breaks_it_lists_again_and_reports_what_changed_meanwhile(
    informer: Informer[str], etcd: FakeEtcd, clock: FakeClock, changes: Changes
) -> None:
    await watching(etcd)
    etcd.write(b"/modelyard/workers/b", b"B")
    await settle()
    changes.take()
    (watch,) = etcd.open_watches()
    watch.fail(ConnectionError("etcd restarted"))
    await settle()
    # while nobody watches: one key goes, one changes, one is new, one stays as it was
    etcd.remove(b"/modelyard/workers/a")
    etcd.write(b"/modelyard/workers/b", b"B2")
    etcd.write(b"/modelyard/workers/c", b"C")

    await clock.advance(0.1)  # the relisting backoff
    await watching(etcd)

    assert values(informer) == {"b": "B2", "c": "C"}
    assert changes.take() == ["a", "b", "c"]
    assert informer.revision == etcd.revision


async def test_a_listing_older_than_a_remembered_write_keeps_it(
    informer: Informer[str], etcd: FakeEtcd, clock: FakeClock
) -> None:
    """A replica that wrote a key remembers it at once (read your writes: a graph just
    deployed runs here); a relisting whose snapshot predates that write must not undo it."""
    await watching(etcd)
    (watch,) = etcd.open_watches()
    watch.fail(ConnectionError("etcd restarted"))
    await settle()
    newer = etcd.revision + 5  # as if written after the relisting's snapshot
    informer.cache["mine"] = Entry("M", newer, newer)

    await clock.advance(0.1)  # the relisting backoff
    await watching(etcd)

    assert values(informer) == {"a": "A", "mine": "M"}


async def test_while_etcd_is_away_it_retries_with_a_growing_backoff(
    informer: Informer[str], etcd: FakeEtcd, clock: FakeClock
) -> None:
    await watching(etcd)
    (watch,) = etcd.open_watches()
    etcd.failure = ConnectionError("etcd away")
    watch.fail(ConnectionError("etcd away"))
    await settle()

    listed = etcd.calls.count("get_prefix")

    for _ in range(30):
        await clock.advance(0.01)

    # retries after about 0.05, 0.1 and 0.2 s: two or three within 0.3 s, not a busy loop
    assert 2 <= etcd.calls.count("get_prefix") - listed <= 3
    assert clock.sleepers == 1  # waiting for the next
    etcd.failure = None
    await clock.advance(2.0)

    await watching(etcd)
    assert values(informer) == {"a": "A"}
