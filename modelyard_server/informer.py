"""An informer over one etcd prefix: a local cache kept equal to etcd, plus change callbacks.

The client-go shape: list the prefix, then watch from the listed revision + 1; when the
watch breaks (etcd restarted, compaction, network) list again and report every difference
between the old cache and the new listing, so handlers never miss a change and can act on
the state as it is (level-triggered), not on the sequence of events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard_server.aio import describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")

#: between attempts to list and watch again after etcd failed us
RELIST = Backoff(initial=0.05, cap=2.0)


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A decoded value and the revisions etcd gave it."""

    value: T
    create_revision: int
    mod_revision: int


class Informer(Generic[T]):
    """Keeps `cache` (name -> Entry) equal to the keys under `prefix`.

    `name` is the key with the prefix removed. `decode` turns raw bytes into T; a value that
    does not decode is logged and treated as absent. `on_change(name)` is called after the
    cache changed for that name: handlers read the cache, they are not handed the value.
    `on_restart()` is called each time the watch broke and the prefix is listed again.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        decode: Callable[[bytes], T],
        on_change: Callable[[str], None],
        *,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff = RELIST,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._on_restart = on_restart
        self._prefix = prefix
        self._decode = decode
        self._on_change = on_change
        self._clock = clock
        self._backoff = backoff
        self.cache: dict[str, Entry[T]] = {}
        self.synced = asyncio.Event()
        self.revision = 0

    async def run(self) -> None:
        retry = self._backoff.counter(clock=self._clock)
        while True:
            try:
                await self._list()
                retry.reset()
                await self._watch()
                problem = "the watch ended"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # etcd unreachable, compacted, or the stream broke
                problem = describe_error(error)
            # paced even after a listing that worked: a watch that keeps ending at once
            # must not turn into a loop of listings
            delay = retry.next()
            log.warning("informer on %s: %s; listing again in %.2f s", self._prefix, problem, delay)
            if self._on_restart is not None:
                self._on_restart()
            await self._clock.sleep(delay)

    async def _list(self) -> None:
        listing = await self._client.get_prefix(self._prefix.encode())
        fresh: dict[str, Entry[T]] = {}
        for kv in listing:
            name = kv.key.decode()[len(self._prefix) :]
            entry = self._entry(name, kv.value, kv.create_revision, kv.mod_revision)
            if entry is not None:
                fresh[name] = entry
        old = dict(self.cache)
        revision = listing.header.revision
        # an entry this replica wrote after the listing's snapshot (a read-your-writes put,
        # e.g. a graph just deployed) stays: the watch from `revision` brings its event
        fresh |= {name: e for name, e in old.items() if e.mod_revision > revision}
        # in place: views hold a reference to this dict
        self.cache.clear()
        self.cache.update(fresh)
        self.revision = revision
        self.synced.set()
        for name in old.keys() | fresh.keys():
            before, after = old.get(name), fresh.get(name)
            if before is None or after is None or before.mod_revision != after.mod_revision:
                self._on_change(name)

    async def _watch(self) -> None:
        watch = await self._client.watch_prefix(
            self._prefix.encode(), start_revision=self.revision + 1
        )
        async for event in watch:
            kv = event.kv
            name = kv.key.decode()[len(self._prefix) :]
            self.revision = max(self.revision, kv.mod_revision)
            if event.kind == "DELETE":
                if self.cache.pop(name, None) is not None:
                    self._on_change(name)
                continue
            entry = self._entry(name, kv.value, kv.create_revision, kv.mod_revision)
            if entry is None:
                self.cache.pop(name, None)
            else:
                self.cache[name] = entry
            self._on_change(name)

    def _entry(self, name: str, raw: bytes, created: int, modified: int) -> Entry[T] | None:
        try:
            return Entry(self._decode(raw), created, modified)
        except Exception as error:  # a writer of another version, or garbage: skip it
            log.warning("ignoring %s%s: cannot decode it (%s)", self._prefix, name, error)
            return None
