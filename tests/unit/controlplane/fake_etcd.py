"""An in-memory etcd with the slice of aetcd's client API that leases, the election and
informers use: lease(), transaction() (create- and mod-revision compares, puts), get(),
get_prefix(), put(), delete(), watch() and watch_prefix().

Simplifications a test must know: a watch sees only what happens after it was created
(etcd would replay from its start revision), and leases expire only when a test calls
`expire`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE", as aetcd's EventKind compares
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class RefreshReply:
    TTL: int  # etcd's field name


class FakeLease:
    def __init__(self, etcd: FakeEtcd, lease_id: int, ttl: int) -> None:
        self._etcd = etcd
        self.id = lease_id
        self.ttl = ttl
        self.refreshes = 0
        self.revoked = False
        self.expired = False  # etcd no longer has it: refreshes answer TTL 0
        self.refresh_failure: Exception | None = None  # raised by refreshes while set
        self.hang = False  # refreshes never answer while set

    async def refresh(self) -> RefreshReply:
        self.refreshes += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.refresh_failure is not None:
            raise self.refresh_failure
        return RefreshReply(0 if self.expired else self.ttl)

    async def revoke(self) -> None:
        self._etcd.check("revoke")
        self.revoked = True
        self._etcd.drop_keys_of(self.id)


class FakeWatch:
    def __init__(self, key: bytes, *, prefix: bool) -> None:
        self.key = key
        self.prefix = prefix
        self.cancelled = False  # by its reader
        self.closed = False  # cancelled, ended or failed: it delivers nothing more
        self._events: asyncio.Queue[WatchEvent | Exception | None] = asyncio.Queue()

    def sees(self, key: bytes) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key

    def push(self, event: WatchEvent) -> None:
        self._events.put_nowait(event)

    def end(self) -> None:
        """The stream ends (as when etcd restarts)."""
        self.closed = True
        self._events.put_nowait(None)

    def fail(self, error: Exception) -> None:
        self.closed = True
        self._events.put_nowait(error)

    async def cancel(self) -> None:
        self.cancelled = True
        self.end()

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            if isinstance(event, Exception):
                raise event
            yield event


class Revision:
    """`transactions.create(key)` or `transactions.mod(key)`; `== n` makes the compare."""

    def __init__(self, key: bytes, field: str) -> None:
        self.key = key
        self.field = field  # "create_revision" or "mod_revision"

    def __eq__(self, revision: object) -> Compare:  # type: ignore[override]
        assert isinstance(revision, int)
        return Compare(self.key, self.field, revision)


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    field: str
    revision: int

    def holds(self, etcd: FakeEtcd) -> bool:
        kv = etcd.data.get(self.key)
        return (getattr(kv, self.field) if kv is not None else 0) == self.revision


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: Any


class Transactions:
    def create(self, key: bytes) -> Revision:
        return Revision(key, "create_revision")

    def mod(self, key: bytes) -> Revision:
        return Revision(key, "mod_revision")

    def put(self, key: bytes, value: bytes, lease: Any = None) -> Put:
        return Put(key, value, lease)


class Listing(list[KeyValue]):
    def __init__(self, kvs: list[KeyValue], revision: int) -> None:
        super().__init__(kvs)
        self.header = _Header(revision)


@dataclass(frozen=True, slots=True)
class _Header:
    revision: int


class FakeEtcd:
    def __init__(self) -> None:
        self.data: dict[bytes, KeyValue] = {}
        self.revision = 1
        self.leases: list[FakeLease] = []
        self.watches: list[FakeWatch] = []
        self.transactions = Transactions()
        self.failure: Exception | None = None  # raised by every call while set
        self.calls: list[str] = []  # every call made, failed ones too

    def check(self, call: str) -> None:
        self.calls.append(call)
        if self.failure is not None:
            raise self.failure

    async def lease(self, ttl: int) -> FakeLease:
        self.check("lease")
        lease = FakeLease(self, 1000 + len(self.leases), ttl)
        self.leases.append(lease)
        return lease

    async def transaction(
        self, compare: list[Compare], success: list[Put], failure: list[Put]
    ) -> tuple[bool, list[object]]:
        self.check("transaction")
        succeeded = all(c.holds(self) for c in compare)
        for op in success if succeeded else failure:
            self.write(op.key, op.value, op.lease)
        return succeeded, []

    async def get(self, key: bytes) -> KeyValue | None:
        self.check("get")
        return self.data.get(key)

    async def get_prefix(self, prefix: bytes) -> Listing:
        self.check("get_prefix")
        kvs = [kv for key, kv in sorted(self.data.items()) if key.startswith(prefix)]
        return Listing(kvs, self.revision)

    async def put(self, key: bytes, value: bytes, lease: Any = None) -> None:
        self.check("put")
        self.write(key, value, lease)

    async def delete(self, key: bytes) -> bool:
        self.check("delete")
        return self.remove(key)

    async def watch(self, key: bytes, start_revision: int | None = None) -> FakeWatch:
        self.check("watch")
        return self._watch(key, prefix=False)

    async def watch_prefix(self, prefix: bytes, start_revision: int | None = None) -> FakeWatch:
        self.check("watch_prefix")
        return self._watch(prefix, prefix=True)

    def _watch(self, key: bytes, *, prefix: bool) -> FakeWatch:
        watch = FakeWatch(key, prefix=prefix)
        self.watches.append(watch)
        return watch

    # what etcd does by itself, or what other clients do, without a round trip

    def write(self, key: bytes, value: bytes, lease: Any = None) -> None:
        self.revision += 1
        old = self.data.get(key)
        lease_id = lease if isinstance(lease, int) else getattr(lease, "id", 0)
        created = old.create_revision if old is not None else self.revision
        kv = KeyValue(key, value, created, self.revision, lease_id)
        self.data[key] = kv
        self._notify(WatchEvent("PUT", kv))

    def remove(self, key: bytes) -> bool:
        old = self.data.pop(key, None)
        if old is None:
            return False
        self.revision += 1
        self._notify(WatchEvent("DELETE", KeyValue(key, b"", 0, self.revision)))
        return True

    def expire(self, lease: FakeLease) -> None:
        lease.expired = True
        self.drop_keys_of(lease.id)

    def drop_keys_of(self, lease_id: int) -> None:
        for key in [k for k, kv in self.data.items() if kv.lease == lease_id]:
            self.remove(key)

    def open_watches(self) -> list[FakeWatch]:
        return [w for w in self.watches if not w.closed]

    def _notify(self, event: WatchEvent) -> None:
        for watch in self.open_watches():
            if watch.sees(event.kv.key):
                watch.push(event)
