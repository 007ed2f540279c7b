"""Endpoint sets pushed to subscribers (WatchEndpoints streams).

Subscribers of the same (model, selector) share one `SetGroup`: its set is computed once
per change and offered to each as the same object, so a stream's encoded message can be
shared too (`Subscription.next_encoded`). Reconciles ask for recomputes with
`recompute_soon`, which marks models dirty and recomputes their groups once, on the event
loop's next turn: a burst of reconciles that runs without yielding (start-up, a new
leader) costs one pass per changed set instead of one per reconcile and subscriber. A
group offers its set when the membership changed; a refresh task re-offers every set
periodically with fresh load. A subscription holds only the latest set: a slow reader
skips stale ones instead of queueing them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoints import Endpoint, EndpointSet
from modelyard.selectors import Selector

Membership = tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]
GroupKey = tuple[str, Selector]
Encoded = TypeVar("Encoded")


def membership(endpoints: Iterable[Endpoint]) -> Membership:
    """What makes two sets the same set: who, where and with which tags (not the load)."""
    return tuple((e.worker_id, e.address, tuple(sorted(e.tags.items()))) for e in endpoints)


class SetGroup:
    """The subscriptions of one (model, selector), and the set they were last offered."""

    def __init__(self, model: str, selector: Selector) -> None:
        self.model = model
        self.selector = selector
        self.subscriptions: set[Subscription] = set()
        self.members: Membership | None = None
        self.version = 0
        self.latest: EndpointSet | None = None
        # the latest set as its streams send it, built by the first stream that needs it
        self._encoded: tuple[EndpointSet, Any] | None = None

    def offer(self, endpoint_set: EndpointSet) -> None:
        self.latest = endpoint_set
        for subscription in self.subscriptions:
            subscription.offer(endpoint_set)

    def encoded(
        self, endpoint_set: EndpointSet, encode: Callable[[EndpointSet], Encoded]
    ) -> Encoded:
        if self._encoded is None or self._encoded[0] is not endpoint_set:
            self._encoded = (endpoint_set, encode(endpoint_set))
        result: Encoded = self._encoded[1]
        return result


class Subscription:
    def __init__(self, group: SetGroup) -> None:
        self.group = group
        self._latest: EndpointSet | None = None
        self._ready = asyncio.Event()

    @property
    def model(self) -> str:
        return self.group.model

    @property
    def selector(self) -> Selector:
        return self.group.selector

    @property
    def version(self) -> int:
        return self.group.version

    def offer(self, endpoint_set: EndpointSet) -> None:
        self._latest = endpoint_set
        self._ready.set()

    async def next(self) -> EndpointSet:
        await self._ready.wait()
        self._ready.clear()
        assert self._latest is not None
        return self._latest

    async def next_encoded(self, encode: Callable[[EndpointSet], Encoded]) -> Encoded:
        """The next set as `encode` makes it, made once per set for all of its group's
        subscriptions (`encode` must be the same function for all of them)."""
        return self.group.encoded(await self.next(), encode)


class EndpointHub:
    def __init__(
        self,
        compute: Callable[[str, Selector], tuple[Endpoint, ...]],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._compute = compute
        self._clock = clock
        self._groups: dict[GroupKey, SetGroup] = {}
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        # Versions start at the wall clock in ms, so they keep increasing across restarts
        # of this replica; within a run they increase by one per membership change.
        self._version = int(time.time() * 1000)

    @property
    def subscribers(self) -> int:
        return sum(len(group.subscriptions) for group in self._groups.values())

    @property
    def groups(self) -> int:
        """How many distinct (model, selector) sets are being kept."""
        return len(self._groups)

    def subscribe(self, model: str, selector: Selector) -> Subscription:
        group = self._groups.get((model, selector))
        if group is None:
            group = self._groups[(model, selector)] = SetGroup(model, selector)
        subscription = Subscription(group)
        group.subscriptions.add(subscription)
        if group.latest is None or model in self._dirty:
            self._update(group, force=True)  # a new group, or one about to change
        else:
            subscription.offer(group.latest)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        group = subscription.group
        group.subscriptions.discard(subscription)
        if not group.subscriptions and self._groups.get((group.model, group.selector)) is group:
            del self._groups[(group.model, group.selector)]

    def recompute(self, models: set[str] | None = None) -> None:
        """Offers new sets to the subscriptions of `models` (all when None) that changed."""
        for group in list(self._groups.values()):
            if models is None or group.model in models:
                self._update(group, force=False)

    def recompute_soon(self, models: Iterable[str]) -> None:
        """Marks `models` for one `recompute` on the event loop's next turn, however many
        times they are marked before it."""
        self._dirty.update(models)
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        self.recompute(dirty)

    def refresh(self) -> None:
        """Offers every subscription its current set, with the freshest load."""
        self._dirty.clear()  # recomputed here, with the rest
        for group in list(self._groups.values()):
            self._update(group, force=True)

    def _update(self, group: SetGroup, *, force: bool) -> None:
        endpoints = self._compute(group.model, group.selector)
        members = membership(endpoints)
        if members != group.members:
            self._version += 1
            group.members, group.version = members, self._version
        elif not force:
            return
        group.offer(EndpointSet(group.model, group.version, endpoints))

    async def refresh_every(self, seconds: float) -> None:
        while True:
            await self._clock.sleep(seconds)
            self.refresh()
