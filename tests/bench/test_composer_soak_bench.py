"""`python -m bench.composer --smoke --only soak`: the admission soak runs on its stacks
(a sized limit and admission off; the default limit's stack is left out of smoke runs)
and reports the documented fields: the capacity and unloaded p99 it measured, each
stack's overload and probe, refusals by code and reason, the composer's RSS, the
recovery, and its verdicts against issue 11's goals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench.composer.soak import recovery_s
from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_run_shape

pytestmark = [pytest.mark.smoke_run("composer_soak"), pytest.mark.timeout(LIMIT_S + 30)]

STACK_FIGURES = (
    "max_runs_in_flight", "recovery_s", "recovery_threshold_ms", "composer_rss_mb.at_start",
    "composer_rss_mb.peak", "composer_rss_mb.at_end", "composer_rss_mb.peak_ratio",
    "overload.goodput_rps", "overload.p99_ms", "overload.error_codes",
    "overload.refusal_reasons", "overload.refused_with_retry_hint", "overload.errors_p99_ms",
    "overload.max_outstanding", "overload.issue_lag_p99_ms", "probe.ok", "timeline",
)  # fmt: skip


@pytest.fixture(scope="module")
def record(smoke_result: Callable[[str], Finished]) -> dict[str, Any]:
    (line,) = assert_run_shape(smoke_result("composer_soak"), {"composer_soak": 1})
    return line


def test_the_line_compares_the_sized_limit_with_admission_off(record: dict[str, Any]) -> None:
    assert record["admission"]["max_runs_in_flight"] == 3  # 1.5 x the 2 workers' calls
    assert record["baseline"]["max_runs_in_flight"] == 1_000_000
    for side in ("admission", "baseline"):
        assert_has(record, *(f"{side}.{figure}" for figure in STACK_FIGURES))
        overload = record[side]["overload"]
        # open loop at twice the measured capacity: every scheduled call was issued
        assert overload["rate_rps"] == pytest.approx(2 * record["capacity"]["throughput_rps"])
        assert overload["issued"] == round(overload["rate_rps"] * overload["seconds"])
        assert overload["ok"] + overload["errors"] == overload["issued"]
        assert record[side]["composer_rss_mb"]["samples"] > 0
    assert_has(record, "goodput_ratio", "p99_ratio", "refused", "other_error_codes")
    assert record["unloaded"]["ok"] > 0 and record["capacity"]["ok"] > 0


def test_only_the_admitting_composer_refuses_and_says_when_to_retry(
    record: dict[str, Any],
) -> None:
    # twice its capacity with 3 places: the composer must refuse some runs, each with
    # RESOURCE_EXHAUSTED (reason OVERLOADED) and gRPC's retry hint, however busy the machine
    refused = record["admission"]["overload"]
    assert refused["error_codes"].get("RESOURCE_EXHAUSTED", 0) > 0
    assert (
        refused["refusal_reasons"].get("OVERLOADED") == refused["error_codes"]["RESOURCE_EXHAUSTED"]
    )
    assert refused["refused_with_retry_hint"] == refused["error_codes"]["RESOURCE_EXHAUSTED"]
    # admission off: nothing is refused with OVERLOADED
    assert "OVERLOADED" not in record["baseline"]["overload"]["refusal_reasons"]


def test_recovery_is_the_start_of_the_first_streak_of_answers_within_the_threshold() -> None:
    good, slow, refused = 50.0, 500.0, "RESOURCE_EXHAUSTED"

    def calls(*runs: tuple[float, str]) -> list[list[Any]]:
        """Probe runs issued 0.1 s apart: [offset s, latency ms, code]."""
        return [[round(0.1 * i, 1), latency, code] for i, (latency, code) in enumerate(runs)]

    assert recovery_s(calls(*[(good, "")] * 6), 100.0) == 0.0
    # slow answers and refusals both count as not recovered; a bad run breaks a streak
    runs = [(slow, ""), (good, ""), (good, refused), *[(good, "")] * 5]
    assert recovery_s(calls(*runs), 100.0) == 0.3
    # a streak cut short by the probe's end still counts; none at all is None
    assert recovery_s(calls((slow, ""), (good, ""), (good, "")), 100.0) == 0.1
    assert recovery_s(calls((slow, ""), (good, refused)), 100.0) is None
