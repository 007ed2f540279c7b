"""Passive health of registrations, as LiteLLM's router keeps it for deployments.

After `allowed_fails` consecutive failed calls a registration cools down for `cooldown_s`:
its calls fail at once with UNAVAILABLE, without touching the network, so the routed
client sends them to another replica. Once the cooldown has passed one call is let through
(the others still fail fast while it runs): its success puts the registration back in
service, its failure cools it down again at once. Any success resets the count.

Kept per service process (each composer and gateway replica judges for itself, from the
calls it made), in memory, keyed by registration id; only failing registrations have an
entry. Time comes from a `Clock`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from modelyard.clock import Clock
from modelyard.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Health:
    failures: int = 0  # consecutive
    cool_until: float | None = None
    trial: bool = False  # the one call let through after a cooldown is running


class Cooldowns:
    def __init__(self, *, allowed_fails: int, cooldown_s: float, clock: Clock) -> None:
        self.allowed_fails = allowed_fails
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._health: dict[str, _Health] = {}

    def cooling(self, registration_id: str) -> bool:
        """Whether calls to it fail fast now (for tools and tests)."""
        health = self._health.get(registration_id)
        if health is None or health.cool_until is None:
            return False
        return health.trial or self._clock.now() < health.cool_until

    @contextlib.contextmanager
    def call(self, registration_id: str) -> Iterator[None]:
        """Around one call: raises Unavailable at once while it cools down; an Unavailable
        raised inside counts as a failure, a normal exit as a success. Anything else
        (a cancelled call, a request refused as invalid) says nothing about its health."""
        health = self._health.get(registration_id)
        trial = False
        if health is not None and health.cool_until is not None:
            left = health.cool_until - self._clock.now()
            if health.trial:
                raise Unavailable("cooling down: one call is trying whether it recovered")
            if left > 0:
                raise Unavailable(
                    f"cooling down for {left:.1f} s more after "
                    f"{health.failures} consecutive failed calls"
                )
            health.trial = trial = True
        try:
            yield
        except Unavailable as failure:
            self._failed(registration_id, failure.message)
            raise
        except BaseException:
            if trial and health is not None:
                health.trial = False  # the next call is the trial
            raise
        self._health.pop(registration_id, None)

    def _failed(self, registration_id: str, reason: str) -> None:
        health = self._health.setdefault(registration_id, _Health())
        health.failures += 1
        if health.trial or health.failures >= self.allowed_fails:
            health.trial = False
            health.cool_until = self._clock.now() + self.cooldown_s
            log.warning(
                "registration %s cools down for %g s after %d consecutive failed calls "
                "(the last: %s)",
                registration_id,
                self.cooldown_s,
                health.failures,
                reason,
            )
