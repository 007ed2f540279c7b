"""`python -m bench.gateway --smoke`: streamed chat through the gateway and straight to the
worker, at both levels, on the stand-in chat model, reporting the documented fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("gateway"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("gateway")


def test_both_levels_report_a_line_and_the_results_file_holds_them(run: Finished) -> None:
    assert_run_shape(run, {"gateway_streaming": 2})


def test_each_line_compares_the_gateway_with_the_worker(run: Finished) -> None:
    lines = run.records("gateway_streaming")
    assert [line["concurrency"] for line in lines] == [1, 16]
    for line in lines:
        assert_load(line, "gateway")
        assert_load(line, "baseline")
        assert_has(line, "gateway.tokens_per_s", "baseline.tokens_per_s", "tokens_per_s_ratio")
        assert_has(line, "ttft_added_ms.p50_ms", "ttft_added_ms.p99_ms")
        # every answer had the tokens asked for, counted from its usage on both sides
        assert line["checks"]["every answer is 8 tokens"] is True
        assert line["gateway"]["completion_tokens"] == 8 * line["gateway"]["ok"]
