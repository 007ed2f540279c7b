"""The admission limit sized from the workers' capacity, when no fixed limit is set.

Runs beyond what the workers serve at once only wait in the workers' queues, and every
admitted run's latency grows with them. In the soak benchmark (bench/composer/soak.py, at
twice capacity) a limit of 1.5x the calls the workers serve at once met every goal of
issue 11: goodput 0.91x capacity, p99 1.48x the unloaded p99, recovery in 1 ms; a fixed 64 on
a 2-worker stack gave a p99 of 19.7x and 1.6 s to recover. So:

    limit = min(CEILING, max(FLOOR, ceil(factor x capacity)))

`capacity` sums `Endpoint.capacity` over the distinct replicas of the composer's routes,
one per (model, worker): a worker in two routes of one model (two selectors) counts once, a
worker serving two models counts for each (each model has an inference thread of its own).
A replica whose capacity is unknown (0: a registered third-party API, a worker older than
the field) counts as 1. FLOOR keeps a composer with no sets yet (no run has asked for a
model) admitting, so that its first runs create the routes the limit grows from; it is the
sized limit of the smallest cluster (one replica serving one call: ceil(1.5 x 1)), so at
the default factor it never raises a real cluster's limit. CEILING bounds the composer's
memory on a very large cluster and is what gRPC's own pending-call limit is sized for
(composer.server), so that admission always answers first.

The limit follows the sets as they change; lowering it refuses new runs only, and never
touches runs already admitted. A model whose route retired (the routed client stops
watching a model nobody called for a while) keeps its last capacity: an idle model is not a
smaller cluster, and forgetting it would leave the composer admitting FLOOR runs when
traffic comes back. Its capacity is replaced when its route watches again. At start the
composer opens the routes of the deployed graphs' models before it says SERVING
(`composer.warm_routes`), so its first burst is admitted by a sized limit too.

Each composer replica sizes itself to all the replicas it routes to: N composers in front
of the same workers admit N times as much together, so give each `admission_factor` / N
(or a fixed `max_runs_in_flight`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

from modelyard.endpoints import EndpointSet

log = logging.getLogger(__name__)

#: The least a sized limit admits (no sets yet, or no replica in them).
FLOOR = 2
#: The most a sized limit admits; set `max_runs_in_flight` for more.
CEILING = 10_000


def sized_limit(sets: Iterable[EndpointSet], *, factor: float) -> int:
    """The limit for the replicas in `sets` (module docstring)."""
    return _limit(capacities(sets), factor=factor)


def capacities(sets: Iterable[EndpointSet]) -> dict[tuple[str, str], int]:
    """The calls each replica serves at once, per (model, worker)."""
    return {(s.model, e.worker_id): max(e.capacity, 1) for s in sets for e in s.endpoints}


def _limit(capacity: dict[tuple[str, str], int], *, factor: float) -> int:
    # rounded first: 1.1 x 10 is 11.000000000000002 in floating point, not a reason for 12
    wanted = math.ceil(round(factor * sum(capacity.values()), 6))
    return min(CEILING, max(FLOOR, wanted))


class SizedLimit:
    """`sized_limit` of the sets `sets()` returns (RoutedClient.endpoint_sets), read at
    every admission: recomputed only when a set was replaced (sets are never mutated), and
    logged when it changes. A model missing from `sets()` keeps the capacity it last had
    (module docstring)."""

    def __init__(self, sets: Callable[[], Sequence[EndpointSet]], *, factor: float) -> None:
        self._sets = sets
        self._factor = factor
        self._seen: Sequence[EndpointSet] = ()
        self._capacity: dict[tuple[str, str], int] = {}
        self._limit = _limit(self._capacity, factor=factor)

    def __call__(self) -> int:
        sets = self._sets()
        if not _same_objects(sets, self._seen):
            self._seen = sets
            watched = {s.model for s in sets}
            kept = {key: n for key, n in self._capacity.items() if key[0] not in watched}
            self._capacity = kept | capacities(sets)
            limit = _limit(self._capacity, factor=self._factor)
            if limit != self._limit:
                log.info("admission limit: %d runs in flight (was %d)", limit, self._limit)
            self._limit = limit
        return self._limit


def _same_objects(these: Sequence[EndpointSet], those: Sequence[EndpointSet]) -> bool:
    """Whether both hold the very same set objects, in order (cheaper than comparing them)."""
    return len(these) == len(those) and all(a is b for a, b in zip(these, those, strict=True))
