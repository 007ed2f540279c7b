"""What each kind of call gives the load generator: the calls, a checked call, a close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# A grpc.aio multicallable made without (de)serialisers: bytes in, bytes out.
RawCall = Callable[..., Any]

# One call: the request's sequence number -> time.perf_counter_ns() of the event that
# counts as its answer (a stream's first result), or None when the whole call counts.
# Raises on failure.
Call = Callable[[int], Awaitable[int | None]]


def no_figures(since: float) -> dict[str, Any]:
    return {}


@dataclass
class Target:
    # coroutine i uses calls[i % len(calls)] (a channel or a connection each)
    calls: Sequence[Call]
    # one call, checked (a fast wrong answer is no result); returns the outputs to keep as
    # the result's `sample`, or {} to keep none
    check: Callable[[], Awaitable[dict[str, Any]]]
    close: Callable[[], Awaitable[None]]
    # figures of this kind of call for the measured phase that began at `since` (monotonic)
    figures: Callable[[float], dict[str, Any]] = field(default=no_figures)


def check_outputs(
    outputs: dict[str, Any], expect: dict[str, Any], echo_of: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`outputs`, if they hold the expected values (and equal `echo_of` when given)."""
    if echo_of is not None and outputs != echo_of:
        raise AssertionError(f"echo mismatch: sent {echo_of!r}, got {outputs!r}")
    for key, value in expect.items():
        if outputs.get(key) != value:
            raise AssertionError(f"output {key!r}: expected {value!r}, got {outputs.get(key)!r}")
    if not outputs:
        raise AssertionError("a response without outputs")
    return outputs
