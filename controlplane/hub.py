"""Endpoint sets pushed to subscribers (WatchEndpoints streams).

Each subscription is one (model, selector). After every reconcile the hub recomputes the
sets of the models that may have changed and offers a subscription its new set when the
membership changed; a refresh task re-offers every set periodically with fresh load.
A subscription holds only the latest set: a slow reader skips stale ones instead of
queueing them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoints import Endpoint, EndpointSet
from modelyard.selectors import Selector

Membership = tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]


def membership(endpoints: Iterable[Endpoint]) -> Membership:
    """What makes two sets the same set: who, where and with which tags (not the load)."""
    return tuple((e.worker_id, e.address, tuple(sorted(e.tags.items()))) for e in endpoints)


class Subscription:
    def __init__(self, model: str, selector: Selector) -> None:
        self.model = model
        self.selector = selector
        self.members: Membership | None = None
        self.version = 0
        self._latest: EndpointSet | None = None
        self._ready = asyncio.Event()

    def offer(self, endpoint_set: EndpointSet) -> None:
        self._latest = endpoint_set
        self._ready.set()

    async def next(self) -> EndpointSet:
        await self._ready.wait()
        self._ready.clear()
        assert self._latest is not None
        return self._latest


class EndpointHub:
    def __init__(
        self,
        compute: Callable[[str, Selector], tuple[Endpoint, ...]],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._compute = compute
        self._clock = clock
        self._subscriptions: set[Subscription] = set()
        # Versions start at the wall clock in ms, so they keep increasing across restarts
        # of this replica; within a run they increase by one per membership change.
        self._version = int(time.time() * 1000)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, model: str, selector: Selector) -> Subscription:
        subscription = Subscription(model, selector)
        self._subscriptions.add(subscription)
        self._update(subscription, force=True)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def recompute(self, models: set[str] | None = None) -> None:
        """Offers new sets to the subscriptions of `models` (all when None) that changed."""
        for subscription in list(self._subscriptions):
            if models is None or subscription.model in models:
                self._update(subscription, force=False)

    def refresh(self) -> None:
        """Offers every subscription its current set, with the freshest load."""
        for subscription in list(self._subscriptions):
            self._update(subscription, force=True)

    def _update(self, subscription: Subscription, *, force: bool) -> None:
        endpoints = self._compute(subscription.model, subscription.selector)
        members = membership(endpoints)
        if members != subscription.members:
            self._version += 1
            subscription.members, subscription.version = members, self._version
        elif not force:
            return
        subscription.offer(EndpointSet(subscription.model, subscription.version, endpoints))

    async def refresh_every(self, seconds: float) -> None:
        while True:
            await self._clock.sleep(seconds)
            self.refresh()
