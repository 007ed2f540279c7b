"""What a `RoutedClient` tells an observer about each attempt of a call: which replica it
tried, and the how-manieth try it was. The composer turns these into trace spans; this
module (layer 1) knows nothing of tracing, only when an attempt starts, runs and ends.

    class Printing:
        def track(self, attempt: Attempt) -> TrackedAttempt: ...

    client = RoutedClient(control_planes, attempts=Printing())

An attempt is tracked from just before its call starts until it ends: answered, failed
(the exception it raised ends the `with`: `modelyard.rescue.Abandoned` for one given up on
a hung replica), or left by its caller (a stream the caller stopped reading ends with
GeneratorExit, a cancelled one, or the loser of a hedge, with CancelledError).

`active()` is entered around each step of the attempt that runs in the caller's task and
may start work that belongs to the attempt (starting the call, whose client interceptors
run then; awaiting a unary answer), never across a stream's `yield`: a context made current
there would leak into the caller's code between two messages.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a routed call on one replica."""

    model: str
    worker_id: str
    address: str
    # 1 for the first replica tried, 2 for the next (after an UNAVAILABLE, an attempt
    # abandoned on a hung replica, or beside a slow one as a hedge), ...
    number: int
    streaming: bool  # PredictStream rather than Predict


class TrackedAttempt(Protocol):
    def __enter__(self) -> TrackedAttempt: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """The attempt ended; `exc` is how it failed, if it did."""

    def active(self) -> AbstractContextManager[object]:
        """Entered around each step of the attempt that may start work of its own (module
        docstring)."""
        ...


class AttemptTracker(Protocol):
    def track(self, attempt: Attempt) -> TrackedAttempt:
        """Called once per attempt, before its call starts."""
        ...


class Untracked:
    """The tracker of a client nobody observes: every attempt is the same no-op."""

    def track(self, attempt: Attempt) -> TrackedAttempt:
        return _UNTRACKED


class _Untracked:
    def __enter__(self) -> _Untracked:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def active(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


_UNTRACKED = _Untracked()
