"""batching_idle_paired's figures (bench.worker.batching_paired), from known latencies."""

from __future__ import annotations

from typing import Any

import pytest

from bench.worker.batching_paired import record, round_figures


def test_a_round_compares_mean_latencies_for_throughput_and_medians_for_p50() -> None:
    # batched: 2 ms twice and a slow 8 ms (mean 4, p50 2); unbatched: 3 ms each (mean 3)
    figures = round_figures({"batched": [0.002, 0.002, 0.008], "unbatched": [0.003] * 3})

    assert figures["throughput_ratio"] == pytest.approx(0.75)  # 1/4 ms against 1/3 ms
    assert figures["p50_ratio"] == pytest.approx(2 / 3, abs=1e-4)  # rounded to 4 places
    assert figures["batched_p50_ms"] == pytest.approx(2.0)


Rounds = list[dict[str, list[float]]]


def part(rounds: Rounds, errors: int = 0) -> dict[str, Any]:
    return {"rounds": rounds, "errors": {"batched": errors, "unbatched": 0}}


def measured(rounds: Rounds, errors: int = 0, streamed: Rounds | None = None) -> dict[str, Any]:
    found = {"iterations": 3, "unary": part(rounds, errors)}
    return found if streamed is None else {**found, "streamed": part(streamed)}


def test_the_verdict_is_the_median_of_the_rounds() -> None:
    alike = {"batched": [0.0030] * 3, "unbatched": [0.0030] * 3}
    slower = {"batched": [0.0033] * 3, "unbatched": [0.0030] * 3}  # +10%: fails alone
    line = record(measured([alike, slower, alike]), task="t", checkpoint="c")

    assert line["throughput_ratio_rounds"][1] == pytest.approx(0.9091, abs=1e-4)
    assert (line["throughput_ratio"], line["p50_ratio"]) == (1.0, 1.0)
    assert line["pass"] is True


def test_batching_that_costs_a_lone_request_fails_the_verdict() -> None:
    slower = {"batched": [0.0033] * 3, "unbatched": [0.0030] * 3}
    line = record(measured([slower] * 3), task="t", checkpoint="c")

    assert line["checks"] == {
        "no errors": True,
        "throughput ratio >= 0.95": False,
        "p50 ratio <= 1.05": False,
    }
    assert line["pass"] is False


def test_a_side_that_answered_nothing_fails_without_figures() -> None:
    line = record(
        measured([{"batched": [], "unbatched": [0.003]}], errors=5), task="t", checkpoint="c"
    )

    assert line["pass"] is False and line["checks"]["no errors"] is False
    assert line["throughput_ratio"] is None and line["throughput_ratio_rounds"] == []


def test_a_streaming_model_is_also_judged_by_its_time_to_first_token() -> None:
    alike = {"batched": [0.0030] * 3, "unbatched": [0.0030] * 3}
    first_token_later = {"batched": [0.0080] * 3, "unbatched": [0.0070] * 3}
    line = record(measured([alike], streamed=[first_token_later]), task="t", checkpoint="c")

    assert line["stream_ttft"]["ttft_p50_ratio"] == pytest.approx(8 / 7, abs=1e-4)
    assert line["checks"]["ttft p50 ratio <= 1.05"] is False
    assert line["checks"]["throughput ratio >= 0.95"] is True
    assert line["pass"] is False
