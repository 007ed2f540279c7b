"""Seconds as Python counts them (floats) and as the API carries them:
`google.protobuf.Duration` for spans, `google.protobuf.Timestamp` for points in time.

    pb.Load(latency=duration(0.004))      # JSON: "0.004s"
    seconds(report.latency)               # 0.004
"""

from __future__ import annotations

import math

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def duration(seconds: float) -> Duration:
    """A Duration of `seconds` (to the nanosecond); ValueError for NaN or infinity."""
    span = Duration()
    span.FromNanoseconds(_nanoseconds(seconds))
    return span


def seconds(span: Duration) -> float:
    """A Duration in seconds; an unset one is 0."""
    return span.seconds + span.nanos / 1e9


def timestamp(unix_seconds: float) -> Timestamp:
    """The Timestamp of a time given in seconds since the Unix epoch (`time.time()`)."""
    point = Timestamp()
    point.FromNanoseconds(_nanoseconds(unix_seconds))
    return point


def unix_seconds(point: Timestamp) -> float:
    """A Timestamp in seconds since the Unix epoch."""
    return point.seconds + point.nanos / 1e9


def _nanoseconds(seconds: float) -> int:
    if not math.isfinite(seconds):
        raise ValueError(f"{seconds} seconds is not a finite time")
    # whole and fractional seconds apart: `seconds * 1e9` as one float loses the
    # nanoseconds of a Unix time (about 1.7e18 ns, past float64's 2**53)
    whole = math.floor(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)
