"""`python -m bench.composer --smoke --only tls`: the seed graph (stand-ins) on two stacks,
one started as `modelyard up --tls` starts it, reports a line per level with both loads,
the throughput ratio and loss, and the c=16 goal's check."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("composer_tls"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("composer_tls")


def test_each_level_compares_the_tls_stack_with_plaintext(run: Finished) -> None:
    records = assert_run_shape(run, {"composer_tls": 2})
    assert [record["concurrency"] for record in records] == [1, 16]
    for record in records:
        assert_load(record, "tls")
        assert_load(record, "baseline")
        assert record["baseline"]["variant"] == "plaintext"
        assert_has(record, "throughput_ratio", "throughput_loss", "p50_added_ms", "p99_ratio")
    goal = records[1]["checks"]
    assert "throughput loss <= 10%" in goal
    assert goal["tls: 0 failed requests"] and goal["plaintext: 0 failed requests"]
