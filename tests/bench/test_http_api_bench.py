"""`python -m bench.http_api --smoke`: a registered API called through the routed client
and directly with httpx, at both levels, reporting the documented fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("http_api"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("http_api")


def test_both_levels_report_a_line_and_the_results_file_holds_them(run: Finished) -> None:
    assert_run_shape(run, {"http_api": 2})


def test_each_line_compares_the_routed_call_with_httpx(run: Finished) -> None:
    lines = run.records("http_api")
    assert [line["scenario"] for line in lines] == ["http_api_c1", "http_api_c16"]
    assert [line["concurrency"] for line in lines] == [1, 16]
    for line in lines:
        assert_load(line, "direct")
        assert_load(line, "routed")
        assert_has(line, "added_p50_ms", "added_p50_ms_rounds", "added_mean_ms")
        assert_has(line, "added_client_cpu_ms_per_req", "throughput_ratio")
        assert_has(line, "direct.client_cpu_ms_per_req", "routed.client_cpu_ms_per_req")
        assert line["checks"]["every_call_answered"]  # a smoke run still answers every call
    assert "added_p50_within_1ms" in lines[0]["checks"]
