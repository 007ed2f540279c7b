"""Seconds in Python, Duration and Timestamp on the wire: no precision lost either way."""

from __future__ import annotations

import math

import pytest
from google.protobuf.duration_pb2 import Duration

from modelyard.times import duration, seconds, timestamp, unix_seconds


@pytest.mark.parametrize("span", [0.0, 0.002, 2.5, -0.3, 86400.000001])
def test_spans_round_trip(span: float) -> None:
    assert seconds(duration(span)) == pytest.approx(span, abs=1e-9)


def test_a_negative_span_keeps_one_sign_as_durations_must() -> None:
    span = duration(-1.25)
    assert (span.seconds, span.nanos) == (-1, -250_000_000)
    assert span.ToJsonString() == "-1.250s"


def test_an_unset_duration_is_zero_seconds() -> None:
    assert seconds(Duration()) == 0.0


def test_unix_times_round_trip_exactly() -> None:
    now = 1_763_000_000.123456
    point = timestamp(now)
    assert point.ToJsonString().startswith("2025-11-13T02:13:20.123456")
    assert unix_seconds(point) == now


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_time_that_is_no_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="is not a finite time"):
        duration(bad)
