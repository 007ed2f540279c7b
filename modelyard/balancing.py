"""Picking one replica of a model per call, on the caller's side (composer and clients).

A `Balancer` holds the current replica set of one model (whole sets, as the control plane
pushes them; `update` diffs them), counts the caller's own calls in flight per replica,
and picks by a policy:

- `p2c` (default): power of two choices. Sample two distinct candidates at random and take
  the cheaper. Nearly as good as the global minimum, but many independent callers with
  the same stale view do not all pile onto the one replica that looked idlest.
- `least_loaded`: the cheapest candidate, ties broken at random. Best for one caller.
- `round_robin`: each candidate in turn (by worker id), ignoring load.

The cost of sending one more call to replica r estimates how long that call would take,
as (calls ahead of it + itself) x (how slow r is relative to its peers):

    cost(r) = (1 + mine(r) + in_flight(r) + queue_depth(r)) * weight(r)
    weight(r) = clamp(latency(r) / median latency of the set, 1/4, 4); 1 when unknown

- mine(r) is this caller's live count (`begin`/`end`): exact and instant, whereas the
  reported in_flight and queue_depth are seconds old. Our own calls are in both once the
  report catches up; the overlap biases every replica alike, so it is left in.
- The 1 is the new call itself: without it idle replicas would all cost 0, however slow.
- latency(r) is the EWMA of this caller's recent successful calls to r while fresh (at most
  `LATENCY_TTL_S` old), else the control plane's report. Failures are not timed: a
  replica that fails fast would otherwise look fast and attract more calls.
- The weight is relative (a 2 s LLM and a 2 ms classifier each compare to their peers) and
  clamped, so one slow reading cannot starve a replica: a replica 4x slower than the
  median still wins against a median peer with four calls queued, gets calls, and so gets
  a fresh measurement.

Not thread-safe: use one balancer from one event loop (or guard it). Clock and random
generator are injected so tests drive time and choices.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import statistics
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from modelyard.endpoints import Endpoint
from modelyard.errors import InvalidArgument, Unavailable
from modelyard.selectors import Selector

POLICIES = ("p2c", "round_robin", "least_loaded")
MAX_LATENCY_WEIGHT = 4.0
LATENCY_TTL_S = 10.0  # after this, our own latency reading gives way to the reported one
LATENCY_EWMA_ALPHA = 0.3


@dataclass(slots=True)
class _Replica:
    endpoint: Endpoint
    in_flight: int = 0  # this caller's calls, not the reported ones
    latency_ms: float = 0.0  # EWMA of this caller's successful calls
    measured_at: float = float("-inf")
    ejected_until: float = float("-inf")


class Balancer:
    def __init__(
        self,
        policy: str = "p2c",
        *,
        model: str = "",
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        choose = {
            "p2c": self._p2c,
            "round_robin": self._round_robin,
            "least_loaded": self._least_loaded,
        }
        if policy not in choose:
            raise InvalidArgument(f"unknown balancing policy {policy!r}; use one of {POLICIES}")
        self.policy = policy
        self.model = model  # only for messages
        self._choose = choose[policy]
        self._clock = clock
        self._rng = rng or random.Random()
        self._replicas: dict[str, _Replica] = {}
        self._typical_ms = 0.0
        self._last_id = ""  # round robin resumes after this id, whatever the set became

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(r.endpoint for r in self._replicas.values())

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Replaces the set. Replicas that stay keep their counters; those that left go."""
        old = self._replicas
        self._replicas = {}
        for endpoint in endpoints:
            replica = old.get(endpoint.worker_id)
            if replica is None:
                replica = _Replica(endpoint)
            replica.endpoint = endpoint  # fresh tags and reported load
            self._replicas[endpoint.worker_id] = replica
        reported = [e.load.latency_ms for e in endpoints if e.load.latency_ms > 0]
        self._typical_ms = statistics.median(reported) if reported else 0.0

    def pick(self, selector: Selector | None = None, exclude: Collection[str] = ()) -> Endpoint:
        """A replica for one call; raises Unavailable when no replica is left to choose."""
        candidates = [
            r
            for worker_id, r in self._replicas.items()
            if worker_id not in exclude and (selector is None or selector.matches(r.endpoint.tags))
        ]
        if not candidates:
            raise Unavailable(self._nothing_matches(selector, exclude))
        now = self._clock()
        # an ejected replica is still better than none: the caller's retry decides
        healthy = [r for r in candidates if r.ejected_until <= now] or candidates
        return self._choose(healthy, now).endpoint

    def begin(self, worker_id: str) -> None:
        """Counts one of the caller's calls to `worker_id` as in flight."""
        replica = self._replicas.get(worker_id)
        if replica is not None:
            replica.in_flight += 1

    def end(self, worker_id: str, latency_s: float | None = None) -> None:
        """Ends a call; `latency_s` only for a success (see the module doc)."""
        replica = self._replicas.get(worker_id)
        if replica is None:  # it left the set while the call ran
            return
        # max(): the replica may have left and come back while the call ran
        replica.in_flight = max(0, replica.in_flight - 1)
        if latency_s is not None:
            now, ms = self._clock(), latency_s * 1000.0
            fresh = now - replica.measured_at <= LATENCY_TTL_S
            a = LATENCY_EWMA_ALPHA
            replica.latency_ms = a * ms + (1 - a) * replica.latency_ms if fresh else ms
            replica.measured_at = now

    @contextlib.contextmanager
    def track(self, worker_id: str) -> Iterator[None]:
        """`begin` ... `end`, timing the call by the clock when it succeeds."""
        self.begin(worker_id)
        started = self._clock()
        try:
            yield
        except BaseException:
            self.end(worker_id, None)
            raise
        self.end(worker_id, self._clock() - started)

    def eject(self, worker_id: str, seconds: float) -> None:
        """Avoids `worker_id` for `seconds` (it just refused a call), unless it is the last."""
        replica = self._replicas.get(worker_id)
        if replica is not None:
            replica.ejected_until = self._clock() + seconds

    def in_flight(self, worker_id: str) -> int:
        replica = self._replicas.get(worker_id)
        return 0 if replica is None else replica.in_flight

    def cost(self, worker_id: str) -> float:
        """The cost formula of the module doc, for one known replica."""
        return self._cost(self._replicas[worker_id], self._clock())

    def _cost(self, replica: _Replica, now: float) -> float:
        load = replica.endpoint.load
        queued = 1 + replica.in_flight + load.in_flight + load.queue_depth
        fresh = now - replica.measured_at <= LATENCY_TTL_S
        latency = replica.latency_ms if fresh else load.latency_ms
        if latency <= 0 or self._typical_ms <= 0:
            return float(queued)
        ratio = latency / self._typical_ms
        return queued * min(MAX_LATENCY_WEIGHT, max(1 / MAX_LATENCY_WEIGHT, ratio))

    def _p2c(self, candidates: list[_Replica], now: float) -> _Replica:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        return a if self._cost(a, now) <= self._cost(b, now) else b

    def _least_loaded(self, candidates: list[_Replica], now: float) -> _Replica:
        costs = [self._cost(r, now) for r in candidates]
        lowest = min(costs)
        return self._rng.choice([r for r, c in zip(candidates, costs, strict=True) if c == lowest])

    def _round_robin(self, candidates: list[_Replica], now: float) -> _Replica:
        ordered = sorted(candidates, key=lambda r: r.endpoint.worker_id)
        ids = [r.endpoint.worker_id for r in ordered]
        chosen = ordered[bisect.bisect_right(ids, self._last_id) % len(ordered)]
        self._last_id = chosen.endpoint.worker_id
        return chosen

    def _nothing_matches(self, selector: Selector | None, exclude: Collection[str]) -> str:
        known = len(self._replicas)
        what = f"model {self.model!r}" if self.model else "the model"
        if selector is not None and selector.terms:
            head = f"no replica of {what} matches selector '{selector}'"
        else:
            head = f"no replica of {what} is available"
        detail = f"{known} replica{'' if known == 1 else 's'} known"
        tried = sum(1 for worker_id in exclude if worker_id in self._replicas)
        if tried:
            detail += f", {tried} already tried"
        return f"{head} ({detail})"
