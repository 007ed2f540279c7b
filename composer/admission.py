"""Admission control: a bound on the runs in flight at one composer replica.

Past the bound a run is refused at once with RESOURCE_EXHAUSTED and a retry hint instead of
waiting behind the others. Unbounded, a composer at twice its capacity held 2,017 runs, its
p99 reached 14.5 s, goodput fell 40% and gRPC's own pending-call limit answered 7.5% of calls
with a bare CANCELLED (issue 11, finding 3). A refused caller can try another replica, or
this one after the hint.

The bound is fixed (the setting `max_runs_in_flight`) or, by default, sized from the
workers' capacity in the endpoint sets and read at every admission
(`composer.admission_limit`): when it falls, runs already admitted go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import Reason, ResourceExhausted

#: The retry hint before any run has finished, in seconds.
FIRST_HINT = 0.1
#: The hint stays within these bounds, in seconds: never "now" (every refused caller back at
#: once), never so long that callers give up on a replica that frees up in a moment.
HINT_BOUNDS = (0.01, 5.0)
#: How much each finished run moves the typical run duration (an exponential moving mean).
_SMOOTHING = 0.1

#: A fixed limit, or one read at every admission (`composer.admission_limit.SizedLimit`).
Limit = int | Callable[[], int]


class AtLimit(ResourceExhausted):
    """A run refused because `limit` runs are in flight already."""

    def __init__(self, limit: int, retry_after: float) -> None:
        milliseconds = round(retry_after * 1000)
        super().__init__(
            f"the composer is at its limit of {limit} runs in flight; retry in ~{milliseconds} ms",
            reason=Reason.OVERLOADED,
            metadata={"limit": str(limit), "retryAfterMs": str(milliseconds)},
        )
        self.retry_after = retry_after


class Admission:
    """Counts runs in flight against `limit`. The retry hint is the typical run's duration
    (by then the runs in flight have mostly finished), within `HINT_BOUNDS`."""

    def __init__(self, limit: Limit, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if isinstance(limit, int):
            if limit < 1:
                raise ValueError(f"the limit of runs in flight must be at least 1, not {limit}")
            self._limit: Callable[[], int] = lambda: limit
        else:
            self._limit = limit
        self._clock = clock
        self._in_flight = 0
        self._typical_run = FIRST_HINT

    @property
    def limit(self) -> int:
        return self._limit()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def retry_after(self) -> float:
        low, high = HINT_BOUNDS
        return min(max(self._typical_run, low), high)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Holds a place for one run while the block runs (however it ends); `AtLimit` at
        once when there is none."""
        limit = self._limit()
        if self._in_flight >= limit:
            raise AtLimit(limit, self.retry_after)
        self._in_flight += 1
        started = self._clock.now()
        try:
            yield
        finally:
            self._in_flight -= 1
            took = self._clock.now() - started
            self._typical_run += _SMOOTHING * (took - self._typical_run)
