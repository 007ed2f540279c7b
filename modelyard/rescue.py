"""Rescuing calls from replicas that stopped answering, for `modelyard.routed_client`.

A replica can hang without closing its connections (SIGSTOP, a stuck GIL, a wedged
device): no RST arrives, so gRPC waits out the caller's whole deadline. Two things
abandon such an attempt while it is still safe to send the call elsewhere, that is before
any response message arrived (gRPC's own retry rule; the replica may have done the work,
so the call must be one a caller may repeat, as every Predict is):

- the replica left the endpoint set (the control plane's prober gave up on it):
  `Rescues.abandon(worker_id)` ends every guarded attempt on it at once;
- the replica went silent: the attempt waited longer than the model's observed latency
  makes plausible (`AttemptTimeouts`, over a `LatencyWindow` of recent answers) and
  nothing came back from that replica meanwhile, to any call of this client
  (`Rescues.heard_from` restarts the wait of every attempt on a replica that answers).
  A slow call on a replica that keeps answering others is slow, not hung: it waits on.

An abandoned attempt raises `Abandoned`, which the routed client treats like an
UNAVAILABLE answer: it counts as an attempt, ejects the replica for a while and the call
goes on with another replica, within the caller's deadline.

The derived timeout, and why it is this conservative: it is

    max(floor_s, factor x the `quantile` of the last `window` answered attempts)

over every replica of the route, counting only answers younger than `max_age_s`, and none
at all until `min_samples` of them exist. A false timeout costs a replayed call and an
ejected healthy replica, a late one only a slower rescue (the endpoint set drops a hung
replica within seconds anyway), so the defaults lean late: 4 x p99, at least 1 s. The
percentile already contains the queueing and batching delays of the load that produced
it; a load that grows slowly moves it along, and the factor of 4 absorbs a sudden doubling.
Unanswered attempts are not samples: a hang cannot raise its own timeout. What the
percentile cannot foresee (one long generation among short ones, on a replica nobody else
is calling) the routed client bounds: a call is abandoned for silence at most once, and
its next attempt waits for the caller's deadline.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from modelyard.clock import Clock


class Abandoned(Exception):
    """An attempt given up before any response arrived; `message` says why (for logs and
    traces); `silent` when it was for the replica's silence (not for leaving the set)."""

    def __init__(self, message: str, *, silent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.silent = silent


class LatencyWindow:
    """The latencies of the last `size` answered attempts, with when each was recorded."""

    #: `recent` sorts again once this long has passed or a sixteenth of the window is new:
    #: sorting 256 numbers on every call would cost more than routing the call
    REFRESH_S = 0.25

    def __init__(self, clock: Clock, size: int = 256) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)  # (recorded at, s)
        self._sorted: list[float] | None = None
        self._sorted_at = -math.inf
        self._sorted_for = math.nan  # the max_age_s it was sorted for
        self._new = 0  # samples recorded since

    def record(self, seconds: float) -> None:
        self._samples.append((self._clock.now(), seconds))
        self._new += 1

    def recent(self, max_age_s: float) -> list[float]:
        """The latencies recorded within the last `max_age_s` seconds, sorted (at most
        REFRESH_S or a sixteenth of the window out of date). Do not change the list."""
        now = self._clock.now()
        if (
            self._sorted is None
            or max_age_s != self._sorted_for
            or now - self._sorted_at >= self.REFRESH_S
            or self._new > len(self._samples) // 16
        ):
            oldest = now - max_age_s
            self._sorted = sorted(seconds for at, seconds in self._samples if at >= oldest)
            self._sorted_at, self._sorted_for, self._new = now, max_age_s, 0
        return self._sorted


@dataclass(frozen=True, slots=True)
class AttemptTimeouts:
    """How long an attempt may go unanswered, from the route's own recent latencies (the
    module docstring explains the defaults). For streams the latency is the time to the
    first message, and so is the timeout: a long generation is never cut short."""

    factor: float = 4.0
    quantile: float = 0.99
    floor_s: float = 1.0
    min_samples: int = 20
    max_age_s: float = 60.0

    def derive(self, window: LatencyWindow) -> float | None:
        """The timeout for the next attempt, or None while too few answers are known."""
        recent = window.recent(self.max_age_s)
        if len(recent) < self.min_samples:
            return None
        # nearest rank: with fewer than 100 samples the p99 is the slowest answer
        rank = min(len(recent), math.ceil(self.quantile * len(recent)))
        return max(self.floor_s, self.factor * recent[rank - 1])


class _Guard:
    """One guarded attempt (`Rescues.guard`): how to cancel it, and until when its replica
    may stay silent. A plain class rather than an async generator: one is entered per
    attempt."""

    __slots__ = ("_rescues", "due", "scope", "silence_s", "silent", "why", "worker_id")

    def __init__(self, rescues: Rescues, worker_id: str, silence_s: float | None) -> None:
        self._rescues = rescues
        self.worker_id = worker_id
        self.silence_s = silence_s
        self.due: float | None = None
        self.why: str | None = None  # set once abandoned
        self.silent = False
        self.scope: asyncio.Timeout | None = None  # None once the attempt is closing

    def abandon(self, why: str, *, silent: bool = False) -> None:
        if self.why is None and self.scope is not None:
            self.why, self.silent = why, silent
            self.scope.reschedule(asyncio.get_running_loop().time())  # cancels the body now

    async def __aenter__(self) -> None:
        self._rescues._add(self)
        scope = asyncio.timeout(None)
        try:
            await scope.__aenter__()  # refuses to run outside a task
        except BaseException:
            self._rescues._forget(self)
            raise
        self.scope = scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        scope, self.scope = self.scope, None
        # the scope is closing: an abandon from now on has nothing to cancel (and a closing
        # asyncio.Timeout refuses to be rescheduled)
        try:
            assert scope is not None
            try:
                # raises TimeoutError when the scope cancelled the body (an abandon)
                await scope.__aexit__(exc_type, exc, traceback)
            except TimeoutError:
                if self.why is not None:
                    raise Abandoned(self.why, silent=self.silent) from None
                raise
            # the caller's own cancellation passes through as is; whatever else the body
            # raised after an abandon (an interceptor may turn the cancellation into a
            # CANCELLED AioRpcError) reads as abandoned
            cancelled = isinstance(exc, asyncio.CancelledError)
            if exc is not None and not cancelled and self.why is not None:
                raise Abandoned(self.why, silent=self.silent) from None
        finally:
            self._rescues._forget(self)


class Rescues:
    """The guarded attempts in flight of one route, by replica. One watchdog task per
    route (not one per attempt: an attempt costs no task) abandons those whose replica
    stayed silent too long. It sleeps until the earliest due time it knows of and ends when
    it wakes to no attempt with a timeout, so attempts that come and go before then cost
    it nothing; `close` stops it at once."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_worker: dict[str, set[_Guard]] = {}
        self._timed: set[_Guard] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._wakes_at = math.inf

    def guard(self, worker_id: str, timeout: float | None) -> _Guard:
        """`async with rescues.guard(worker_id, timeout):` runs the body (the wait for an
        attempt's first response) until it finishes, the replica is abandoned, or nothing
        is heard from the replica for `timeout` seconds on the clock (None: never); the
        last two raise `Abandoned`. The caller's own cancellation passes through as is."""
        return _Guard(self, worker_id, timeout)

    def _add(self, guard: _Guard) -> None:
        if guard.silence_s is not None:
            guard.due = self._clock.now() + guard.silence_s
        self._by_worker.setdefault(guard.worker_id, set()).add(guard)
        if guard.due is not None:
            self._timed.add(guard)
            self._watch_until(guard.due)

    def _forget(self, guard: _Guard) -> None:
        guards = self._by_worker[guard.worker_id]
        guards.discard(guard)
        if not guards:
            del self._by_worker[guard.worker_id]
        # the watchdog is left to find out at its next wake-up: stopping it here would start
        # and cancel a task for every attempt of a client making one call at a time
        self._timed.discard(guard)

    def heard_from(self, worker_id: str) -> None:
        """`worker_id` answered (a call, a stream message): it is alive, so the attempts
        waiting on it start their silence over."""
        now = self._clock.now()
        for guard in self._by_worker.get(worker_id, ()):
            if guard.silence_s is not None:
                guard.due = now + guard.silence_s

    def abandon(self, worker_id: str, reason: str) -> int:
        """Abandons every guarded attempt on `worker_id`; returns how many there were."""
        guards = list(self._by_worker.get(worker_id, ()))
        for guard in guards:
            guard.abandon(reason)
        return len(guards)

    def close(self) -> None:
        """Stops the watchdog (the client is closing; its attempts end with it)."""
        self._stop_watching()

    def _watch_until(self, due: float) -> None:
        """Makes sure the watchdog wakes by `due` (a new attempt may be due before it)."""
        if self._watchdog is not None and not self._watchdog.done() and self._wakes_at <= due:
            return
        self._stop_watching()
        self._watchdog = asyncio.get_running_loop().create_task(
            self._watch(), name="rescue watchdog"
        )
        self._wakes_at = due  # at the latest: it wakes at the earliest due it finds

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._wakes_at = math.inf

    async def _watch(self) -> None:
        # answers only move due times later, so waking at the earliest one planned is
        # never late; waking early costs one look
        while self._timed:
            now = self._clock.now()
            for guard in [g for g in self._timed if g.due is not None and g.due <= now]:
                self._timed.discard(guard)
                guard.abandon(
                    f"nothing heard from the replica for {guard.silence_s:.3g}s", silent=True
                )
            dues = [g.due for g in self._timed if g.due is not None]
            if not dues:
                break
            self._wakes_at = min(dues)
            await self._clock.sleep(self._wakes_at - now)
        self._wakes_at = math.inf
