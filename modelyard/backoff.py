"""The one backoff every retry loop uses (etcd reconnects, informers, registration,
election, probes, load feeds, endpoint watches, the work queue): capped exponential delays
with jitter, so peers that lost a server together do not all come back in the same instant.

A `Backoff` is a frozen policy, shared freely; each retry loop counts its own attempts
with `backoff.counter()`:

    retry = BACKOFF.counter()
    while True:
        try:
            await work()
            retry.reset()
        except ConnectionError:
            await retry.wait()
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from modelyard.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class Backoff:
    """delay(n) = min(cap, initial * multiplier**n) * uniform(1 - jitter, 1 + jitter)"""

    initial: float = 0.05
    cap: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap and self.multiplier >= 1 and 0 <= self.jitter < 1):
            raise ValueError("a backoff needs 0 < initial <= cap, multiplier >= 1, 0 <= jitter < 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay after `attempt` failures (0: before the first retry), with jitter."""
        base = min(self.cap, self.initial * self.multiplier ** min(attempt, 64))  # no overflow
        return base * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)

    def counter(
        self, *, rng: random.Random | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> BackoffCounter:
        return BackoffCounter(self, rng or random.Random(), clock)


class BackoffCounter:
    """One retry loop's attempts under a `Backoff`."""

    def __init__(self, policy: Backoff, rng: random.Random, clock: Clock) -> None:
        self.policy = policy
        self._rng = rng
        self._clock = clock
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt, counting this failure."""
        delay = self.policy.delay(self.attempts, self._rng)
        self.attempts += 1
        return delay

    async def wait(self) -> float:
        """Sleeps the next delay on the counter's clock; returns it (for logs)."""
        delay = self.next()
        await self._clock.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempts = 0
