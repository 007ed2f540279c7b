"""What-if for the balancing scenario: the real `modelyard.balancing.Balancer` driven by a
discrete-event simulation of it, beside a copy of the cost it had before the fix.

Three FIFO replicas with one model thread each (5, 5 and 50 ms a call), 16 closed-loop
callers sharing one balancer (as the coroutines of one RoutedClient do), and the
reported load (in flight, queue depth, latency EWMA as a worker computes it) refreshed
every second, as the control plane re-sends sets. No network and no processes: it runs
in a second, deterministically, so a change to balancing.py can be judged before the real
bench (`python -m bench.controlplane`, scenario "balancing") confirms it.

    python -m bench.experiments.balance_sim            # one JSON line per variant, ~1 s

`LegacyBalancer` is the cost as it was until commit e59d42d, kept to show what this found:
the queue term added the reported in-flight and queue depth (a snapshot up to a second
old that includes the caller's own calls, so callers herded away from whichever replica
was busiest in the snapshot), and the weight was raw latency, queueing included, over the
median reported latency, clamped at 4 (so a fast replica with a queue looked as slow as
an idle slow one). Its two halves can be switched off separately to see what each costs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import statistics
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.common.stats import percentile
from modelyard.balancing import Balancer
from modelyard.endpoints import Endpoint, Load

WORKER_LATENCY_WEIGHT = 0.2  # workers.service.LATENCY_WEIGHT: the reported latency EWMA
# The legacy cost's constants, as they were then.
LEGACY_MAX_WEIGHT = 4.0
LEGACY_LATENCY_TTL_S = 10.0
LEGACY_EWMA_ALPHA = 0.3


class SimBalancer(Protocol):
    """What the simulation drives: the calls RoutedClient makes on its balancer."""

    def update(self, endpoints: Sequence[Endpoint]) -> None: ...
    def pick(self) -> Endpoint: ...
    def begin(self, worker_id: str) -> int: ...
    def end(self, worker_id: str, latency_s: float | None = None, ahead: int = 0) -> None: ...


@dataclass
class _LegacyReplica:
    endpoint: Endpoint
    in_flight: int = 0  # this caller's calls
    latency_ms: float = 0.0  # EWMA of this caller's raw latencies, queueing included
    measured_at: float = float("-inf")


class LegacyBalancer:
    """p2c with the cost it had until e59d42d (a copy of that code's p2c path, so that the
    real Balancer can change freely). `reported_queue`: add the reported in-flight and
    queue depth to the queue term; `latency_weight`: weigh by raw latency over the median
    reported latency, clamped at 4. With both off it counts only live calls."""

    def __init__(
        self, sim: Sim, rng: random.Random, *, reported_queue: bool, latency_weight: bool
    ) -> None:
        self.sim = sim
        self.rng = rng
        self.reported_queue = reported_queue
        self.latency_weight = latency_weight
        self.replicas: dict[str, _LegacyReplica] = {}
        self.reported_typical_ms = 0.0

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        old, self.replicas = self.replicas, {}
        for endpoint in endpoints:
            replica = old.get(endpoint.worker_id) or _LegacyReplica(endpoint)
            replica.endpoint = endpoint  # fresh reported load
            self.replicas[endpoint.worker_id] = replica
        reported = [e.load.latency_ms for e in endpoints if e.load.latency_ms > 0]
        self.reported_typical_ms = statistics.median(reported) if reported else 0.0

    def pick(self) -> Endpoint:
        candidates = list(self.replicas.values())
        if len(candidates) == 1:
            return candidates[0].endpoint
        now = self.sim.now()
        a, b = self.rng.sample(candidates, 2)
        return (a if self.cost(a, now) <= self.cost(b, now) else b).endpoint

    def begin(self, worker_id: str) -> int:
        replica = self.replicas[worker_id]
        replica.in_flight += 1
        return replica.in_flight - 1

    def end(self, worker_id: str, latency_s: float | None = None, ahead: int = 0) -> None:
        # every successful call's raw latency, the first one included
        replica = self.replicas[worker_id]
        replica.in_flight = max(0, replica.in_flight - 1)
        if latency_s is not None:
            now, ms = self.sim.now(), latency_s * 1000.0
            fresh = now - replica.measured_at <= LEGACY_LATENCY_TTL_S
            a = LEGACY_EWMA_ALPHA
            replica.latency_ms = a * ms + (1 - a) * replica.latency_ms if fresh else ms
            replica.measured_at = now

    def cost(self, replica: _LegacyReplica, now: float) -> float:
        load = replica.endpoint.load
        queued = 1 + replica.in_flight
        if self.reported_queue:
            queued += load.in_flight + load.queue_depth
        if not self.latency_weight:
            return float(queued)
        fresh = now - replica.measured_at <= LEGACY_LATENCY_TTL_S
        latency = replica.latency_ms if fresh else load.latency_ms
        if latency <= 0 or self.reported_typical_ms <= 0:
            return float(queued)
        ratio = latency / self.reported_typical_ms
        return queued * min(LEGACY_MAX_WEIGHT, max(1 / LEGACY_MAX_WEIGHT, ratio))


@dataclass
class SimReplica:
    worker_id: str
    service_s: float
    queue: deque[Callable[[], None]] = field(default_factory=deque)
    busy: bool = False
    in_flight: int = 0
    latency_s: float | None = None  # the worker's own EWMA, queue wait included

    def report(self) -> Load:
        return Load(self.in_flight, max(0, self.in_flight - 1), (self.latency_s or 0.0) * 1000)


@dataclass
class Sim:
    """A virtual clock and an event heap; nothing sleeps. It is the balancers' clock
    (`modelyard.clock.Clock`): they read the simulated time, never the wall clock."""

    time: float = 0.0
    _heap: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        # a balancer only reads the clock; the simulated callers are callbacks, not tasks
        raise NotImplementedError("nothing sleeps in the simulation")

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action))

    def run(self, until: Callable[[], bool]) -> None:
        while self._heap and not until():
            self.time, _, action = heapq.heappop(self._heap)
            action()


@dataclass
class Scenario:
    services_ms: dict[str, float]
    balancer: SimBalancer
    sim: Sim
    requests: int
    callers: int = 16
    refresh_s: float = 1.0
    jitter: float = 0.1  # +-10% per call: sleeps and thread hand-offs are not exact
    seed: int = 1
    latencies_ms: list[float] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    issued: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.replicas = {w: SimReplica(w, ms / 1000.0) for w, ms in self.services_ms.items()}
        self.served = dict.fromkeys(self.replicas, 0)
        self._publish()

    def _publish(self) -> None:
        """The control plane's periodic push: whole set, fresh load."""
        self.balancer.update(
            [Endpoint(w, f"sim:{w}", {}, r.report()) for w, r in self.replicas.items()]
        )
        self.sim.at(self.sim.time + self.refresh_s, self._publish)

    def _call(self) -> None:
        if self.issued >= self.requests:
            return
        self.issued += 1
        worker_id = self.balancer.pick().worker_id
        ahead = self.balancer.begin(worker_id)
        replica, sent = self.replicas[worker_id], self.sim.time
        replica.in_flight += 1

        def finish() -> None:
            latency = self.sim.time - sent
            replica.in_flight -= 1
            previous = replica.latency_s
            replica.latency_s = (
                latency
                if previous is None
                else previous + WORKER_LATENCY_WEIGHT * (latency - previous)
            )
            self.balancer.end(worker_id, latency, ahead)
            self.latencies_ms.append(latency * 1000.0)
            self.served[worker_id] += 1
            self._call()  # closed loop: the caller sends its next call at once

        replica.queue.append(finish)
        self._serve(replica)

    def _serve(self, replica: SimReplica) -> None:
        if replica.busy or not replica.queue:
            return
        replica.busy = True
        done = replica.queue.popleft()
        cost = replica.service_s * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

        def complete() -> None:
            replica.busy = False
            done()
            self._serve(replica)

        self.sim.at(self.sim.time + cost, complete)

    def run(self) -> dict[str, object]:
        for _ in range(self.callers):
            self._call()
        self.sim.run(until=lambda: len(self.latencies_ms) >= self.requests)
        lat = sorted(self.latencies_ms)
        return {
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1], 2),
            "throughput_rps": round(len(lat) / self.sim.time, 1),
            "served": self.served,
        }


FAST = {"fast-1": 5.0, "fast-2": 5.0}
ALL = {**FAST, "slow-1": 50.0}
REQUESTS = 3000


def scenario(
    services: dict[str, float],
    policy: str,
    seed: int,
    requests: int,
    *,
    legacy: tuple[bool, bool] | None = None,
) -> Scenario:
    """`legacy`: (reported_queue, latency_weight) of a LegacyBalancer (p2c); None: the
    real Balancer with `policy`."""
    sim = Sim()
    rng = random.Random(seed)
    balancer: SimBalancer
    if legacy is None:
        balancer = Balancer(policy, clock=sim, rng=rng)
    else:
        balancer = LegacyBalancer(sim, rng, reported_queue=legacy[0], latency_weight=legacy[1])
    return Scenario(services, balancer, sim, requests, seed=seed)


BEFORE = (True, True)  # the cost until e59d42d
BEFORE_LIVE_CALLS_ONLY = (False, True)  # only the herding fixed


def simulate(seed: int = 1, requests: int = REQUESTS) -> dict[str, dict[str, object]]:
    variants = {
        "ideal_round_robin": scenario(FAST, "round_robin", seed, requests),
        "ideal_p2c": scenario(FAST, "p2c", seed, requests),
        "ideal_p2c_before": scenario(FAST, "p2c", seed, requests, legacy=BEFORE),
        "p2c": scenario(ALL, "p2c", seed, requests),
        "least_loaded": scenario(ALL, "least_loaded", seed, requests),
        "round_robin": scenario(ALL, "round_robin", seed, requests),
        "p2c_before": scenario(ALL, "p2c", seed, requests, legacy=BEFORE),
        "p2c_before_live_calls_only": scenario(
            ALL, "p2c", seed, requests, legacy=BEFORE_LIVE_CALLS_ONLY
        ),
    }
    return {name: variant.run() for name, variant in variants.items()}


def main() -> int:
    if sys.argv[1:]:
        raise SystemExit("usage: python -m bench.experiments.balance_sim (no options)")
    results = simulate()
    ideal_p99 = float(results["ideal_round_robin"]["p99_ms"])  # type: ignore[arg-type]
    for name, result in results.items():
        p99 = float(result["p99_ms"])  # type: ignore[arg-type]
        print(json.dumps({"variant": name, **result, "p99_vs_ideal": round(p99 / ideal_p99, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
