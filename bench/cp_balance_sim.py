"""What-if for the balancing scenario: the real `modelyard.balancing.Balancer` driven by a
discrete-event simulation of it, beside a copy of the cost it had before the fix.

Three FIFO replicas with one model thread each (5, 5 and 50 ms a call), 16 closed-loop
callers sharing one balancer (as the coroutines of one RoutedClient do), and the
reported load (in flight, queue depth, latency EWMA as a worker computes it) refreshed
every second, as the control plane re-sends sets. No network and no processes: it runs
in a second, deterministically, so a change to balancing.py can be judged before the real
bench (bench.controlplane_bench, scenario "balancing") confirms it.

    python -m bench.cp_balance_sim            # one JSON line per variant

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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import percentile
from modelyard.balancing import LATENCY_EWMA_ALPHA, LATENCY_TTL_S, Balancer, _Replica
from modelyard.endpoints import Endpoint, Load

WORKER_LATENCY_WEIGHT = 0.2  # workers.service.LATENCY_WEIGHT: the reported latency EWMA
LEGACY_MAX_WEIGHT = 4.0


class LegacyBalancer(Balancer):
    """The pre-e59d42d cost. `reported_queue`: add the reported in-flight and queue depth to
    the queue term; `latency_weight`: weigh by raw latency (queueing included) over the
    median reported latency, clamped at 4. With both off it counts only live calls."""

    def __init__(
        self, policy: str, *, reported_queue: bool, latency_weight: bool, **options: Any
    ) -> None:
        super().__init__(policy, **options)
        self.reported_queue = reported_queue
        self.latency_weight = latency_weight
        self._reported_typical_ms = 0.0

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        super().update(endpoints)
        reported = [e.load.latency_ms for e in endpoints if e.load.latency_ms > 0]
        self._reported_typical_ms = statistics.median(reported) if reported else 0.0

    def end(self, worker_id: str, latency_s: float | None = None, ahead: int = 0) -> None:
        # the old EWMA: every successful call's raw latency, the first one included
        replica = self._replicas.get(worker_id)
        if replica is None:
            return
        replica.in_flight = max(0, replica.in_flight - 1)
        if latency_s is not None:
            now, ms = self._clock(), latency_s * 1000.0
            fresh = now - replica.measured_at <= LATENCY_TTL_S
            a = LATENCY_EWMA_ALPHA
            replica.latency_ms = a * ms + (1 - a) * replica.latency_ms if fresh else ms
            replica.measured_at = now

    def _cost(self, replica: _Replica, now: float, typical_ms: float) -> float:
        load = replica.endpoint.load
        queued = 1 + replica.in_flight
        if self.reported_queue:
            queued += load.in_flight + load.queue_depth
        if not self.latency_weight:
            return float(queued)
        fresh = now - replica.measured_at <= LATENCY_TTL_S
        latency = replica.latency_ms if fresh else load.latency_ms
        if latency <= 0 or self._reported_typical_ms <= 0:
            return float(queued)
        ratio = latency / self._reported_typical_ms
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
    """A virtual clock and an event heap; nothing sleeps."""

    now: float = 0.0
    _heap: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action))

    def run(self, until: Callable[[], bool]) -> None:
        while self._heap and not until():
            self.now, _, action = heapq.heappop(self._heap)
            action()


@dataclass
class Scenario:
    services_ms: dict[str, float]
    balancer: Balancer
    callers: int = 16
    requests: int = 3000
    refresh_s: float = 1.0
    jitter: float = 0.1  # +-10% per call: sleeps and thread hand-offs are not exact
    seed: int = 1
    sim: Sim = field(default_factory=Sim)
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
        self.sim.at(self.sim.now + self.refresh_s, self._publish)

    def _call(self) -> None:
        if self.issued >= self.requests:
            return
        self.issued += 1
        worker_id = self.balancer.pick().worker_id
        ahead = self.balancer.begin(worker_id)
        replica, sent = self.replicas[worker_id], self.sim.now
        replica.in_flight += 1

        def finish() -> None:
            latency = self.sim.now - sent
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

        self.sim.at(self.sim.now + cost, complete)

    def run(self) -> dict[str, object]:
        for _ in range(self.callers):
            self._call()
        self.sim.run(until=lambda: len(self.latencies_ms) >= self.requests)
        lat = sorted(self.latencies_ms)
        return {
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1], 2),
            "throughput_rps": round(len(lat) / self.sim.now, 1),
            "served": self.served,
        }


FAST = {"fast-1": 5.0, "fast-2": 5.0}
ALL = {**FAST, "slow-1": 50.0}


def scenario(
    services: dict[str, float],
    policy: str,
    seed: int,
    *,
    legacy: tuple[bool, bool] | None = None,
) -> Scenario:
    """`legacy`: (reported_queue, latency_weight) of a LegacyBalancer; None: the real one."""
    sim = Sim()
    # the balancer reads the simulated clock, not the wall clock
    options: dict[str, Any] = {"clock": lambda: sim.now, "rng": random.Random(seed)}
    balancer = (
        Balancer(policy, **options)
        if legacy is None
        else LegacyBalancer(policy, reported_queue=legacy[0], latency_weight=legacy[1], **options)
    )
    return Scenario(services, balancer, seed=seed, sim=sim)


BEFORE = (True, True)  # the cost until e59d42d
BEFORE_LIVE_CALLS_ONLY = (False, True)  # only the herding fixed


def simulate(seed: int = 1) -> dict[str, dict[str, object]]:
    variants = {
        "ideal_round_robin": scenario(FAST, "round_robin", seed),
        "ideal_p2c": scenario(FAST, "p2c", seed),
        "ideal_p2c_before": scenario(FAST, "p2c", seed, legacy=BEFORE),
        "p2c": scenario(ALL, "p2c", seed),
        "least_loaded": scenario(ALL, "least_loaded", seed),
        "round_robin": scenario(ALL, "round_robin", seed),
        "p2c_before": scenario(ALL, "p2c", seed, legacy=BEFORE),
        "p2c_before_live_calls_only": scenario(ALL, "p2c", seed, legacy=BEFORE_LIVE_CALLS_ONLY),
    }
    return {name: variant.run() for name, variant in variants.items()}


def main() -> None:
    results = simulate()
    ideal_p99 = float(results["ideal_round_robin"]["p99_ms"])  # type: ignore[arg-type]
    for name, result in results.items():
        p99 = float(result["p99_ms"])  # type: ignore[arg-type]
        print(json.dumps({"variant": name, **result, "p99_vs_ideal": round(p99 / ideal_p99, 2)}))


if __name__ == "__main__":
    main()
