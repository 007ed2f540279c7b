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
as (calls ahead of it + itself) x (how long r takes per call, relative to its peers):

    cost(r) = (1 + mine(r)) * weight(r)
    weight(r) = clamp(service(r) / median service time of the candidates, 1/16, 16)
                (1 when unknown)

- mine(r) is this caller's live count (`begin`/`end`): exact and instant. The reported
  in_flight and queue_depth are a snapshot re-sent once a second that includes our own
  calls; counting them made every caller shun the replica that was busiest in the snapshot
  for a whole second and then flip (measured: p2c lost a third of round robin's throughput
  on two equal replicas, bench/README.md). The random pair already keeps independent
  callers apart, as in Finagle's and Envoy's p2c.
- The 1 is the new call itself: without it idle replicas would all cost 0, however slow.
- service(r) is time per call, not latency: a call's latency divided by (1 + the calls of
  ours that were ahead of it when it began), as an EWMA of this caller's recent successful
  calls while fresh (at most `LATENCY_TTL_S` old), else the control plane's report divided
  the same way by its in-flight count. Weighing by raw latency counted queueing twice (the
  queue term already has it), so a fast replica with a queue looked as slow as an idle slow
  one. Failures are not timed: a replica that fails fast would otherwise look fast.
- The weight is relative (a 2 s LLM and a 2 ms classifier each compare to their peers),
  1 within a factor of `SAME_SPEED_BAND` of the median (noise is not speed), and clamped,
  so one slow reading cannot starve a replica: it still gets a call whenever its
  peers have enough queued, and so gets a fresh measurement.

Not thread-safe: use one balancer from one event loop (or guard it). Clock and random
generator are injected so tests drive time and choices.
"""

from __future__ import annotations

import bisect
import random
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import TracebackType

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.endpoints import Endpoint
from modelyard.errors import InvalidArgument, Reason, Unavailable
from modelyard.selectors import Selector

POLICIES = ("p2c", "round_robin", "least_loaded")
MAX_LATENCY_WEIGHT = 16.0  # a 10x slower replica must be expressible
# Replicas within this factor of the median count as equally fast. Without it, callers with
# few calls in flight follow measurement noise: one slow first reading and p2c would starve
# that replica until the reading went stale.
SAME_SPEED_BAND = 2.0
MIN_SAMPLES = 3  # own readings are trusted after this many (besides the first, unused)
LATENCY_TTL_S = 10.0  # after this, our own latency reading gives way to the reported one
LATENCY_EWMA_ALPHA = 0.3


@dataclass(slots=True)
class _Replica:
    endpoint: Endpoint
    in_flight: int = 0  # this caller's calls, not the reported ones
    latency_ms: float = 0.0  # EWMA of this caller's service time per call (see the doc)
    measured_at: float = float("-inf")
    timed: int = 0  # successful calls seen; the first is not used (see `end`)
    ejected_until: float = float("-inf")


class Balancer:
    def __init__(
        self,
        policy: str = "p2c",
        *,
        model: str = "",
        clock: Clock = SYSTEM_CLOCK,
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

    def pick(self, selector: Selector | None = None, exclude: Collection[str] = ()) -> Endpoint:
        """A replica for one call; raises Unavailable when no replica is left to choose."""
        candidates = [
            r
            for worker_id, r in self._replicas.items()
            if worker_id not in exclude and (selector is None or selector.matches(r.endpoint.tags))
        ]
        if not candidates:
            raise Unavailable(self._nothing_matches(selector, exclude), reason=Reason.NO_REPLICA)
        now = self._clock.now()
        # an ejected replica is still better than none: the caller's retry decides
        healthy = [r for r in candidates if r.ejected_until <= now] or candidates
        return self._choose(healthy, now).endpoint

    def begin(self, worker_id: str) -> int:
        """Counts one of the caller's calls to `worker_id` as in flight; returns how many of
        ours were already in flight there (pass it to `end` to time the call per call)."""
        replica = self._replicas.get(worker_id)
        if replica is None:
            return 0
        replica.in_flight += 1
        return replica.in_flight - 1

    def end(self, worker_id: str, latency_s: float | None = None, ahead: int = 0) -> None:
        """Ends a call; `latency_s` only for a success, `ahead` as `begin` returned it."""
        replica = self._replicas.get(worker_id)
        if replica is None:  # it left the set while the call ran
            return
        # max(): the replica may have left and come back while the call ran
        replica.in_flight = max(0, replica.in_flight - 1)
        if latency_s is not None:
            replica.timed += 1
            if replica.timed == 1:
                return  # the first call also opened the channel: not the replica's speed
            now, ms = self._clock.now(), latency_s * 1000.0 / (1 + ahead)
            fresh = now - replica.measured_at <= LATENCY_TTL_S
            a = LATENCY_EWMA_ALPHA
            replica.latency_ms = a * ms + (1 - a) * replica.latency_ms if fresh else ms
            replica.measured_at = now

    def track(self, worker_id: str) -> _Tracked:
        """`with balancer.track(worker_id):` is `begin` ... `end`, timing the call by the
        clock when it succeeds."""
        return _Tracked(self, self._clock, worker_id)

    def eject(self, worker_id: str, seconds: float) -> None:
        """Avoids `worker_id` for `seconds` (it just refused a call), unless it is the last."""
        replica = self._replicas.get(worker_id)
        if replica is not None:
            replica.ejected_until = self._clock.now() + seconds

    def in_flight(self, worker_id: str) -> int:
        replica = self._replicas.get(worker_id)
        return 0 if replica is None else replica.in_flight

    def cost(self, worker_id: str) -> float:
        """The cost formula of the module doc, for one known replica."""
        now = self._clock.now()
        typical = self._typical_ms(list(self._replicas.values()), now)
        return self._cost(self._replicas[worker_id], now, typical)

    def _service_ms(self, replica: _Replica, now: float) -> float:
        """Time per call: our own reading while fresh, else the report (0: unknown)."""
        if replica.timed > MIN_SAMPLES and now - replica.measured_at <= LATENCY_TTL_S:
            return replica.latency_ms
        load = replica.endpoint.load
        return load.latency_ms / (1 + load.in_flight) if load.latency_ms > 0 else 0.0

    def _typical_ms(self, candidates: Sequence[_Replica], now: float) -> float:
        known = [ms for r in candidates if (ms := self._service_ms(r, now)) > 0]
        return statistics.median(known) if known else 0.0

    def _cost(self, replica: _Replica, now: float, typical_ms: float) -> float:
        queued = 1 + replica.in_flight
        service = self._service_ms(replica, now)
        if service <= 0 or typical_ms <= 0:
            return float(queued)
        ratio = service / typical_ms
        if 1 / SAME_SPEED_BAND < ratio < SAME_SPEED_BAND:
            return float(queued)  # noise, e.g. a first call that also opened the channel
        return queued * min(MAX_LATENCY_WEIGHT, max(1 / MAX_LATENCY_WEIGHT, ratio))

    def _p2c(self, candidates: list[_Replica], now: float) -> _Replica:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(candidates, 2)
        typical = self._typical_ms(candidates, now)
        return a if self._cost(a, now, typical) <= self._cost(b, now, typical) else b

    def _least_loaded(self, candidates: list[_Replica], now: float) -> _Replica:
        typical = self._typical_ms(candidates, now)
        costs = [self._cost(r, now, typical) for r in candidates]
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


class _Tracked:
    """`Balancer.track`'s context: a plain class rather than a generator-based context
    manager, as the routed client enters one per attempt."""

    __slots__ = ("_ahead", "_balancer", "_clock", "_started", "_worker_id")

    def __init__(self, balancer: Balancer, clock: Clock, worker_id: str) -> None:
        self._balancer = balancer
        self._clock = clock
        self._worker_id = worker_id
        self._ahead = 0
        self._started = 0.0

    def __enter__(self) -> None:
        self._ahead = self._balancer.begin(self._worker_id)
        self._started = self._clock.now()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:  # failures are not timed
            self._balancer.end(self._worker_id, None)
        else:
            latency_s = self._clock.now() - self._started
            self._balancer.end(self._worker_id, latency_s, self._ahead)
