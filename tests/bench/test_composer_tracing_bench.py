"""`python -m bench.composer --smoke --only tracing`: the seed graph (stand-ins) on three
stacks, tracing off, at 100% and at 10%, reports the documented fields: each variant's
load, the throughput losses, the spans the receiver got, and the off path's cost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("composer_tracing"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("composer_tracing")


def test_the_tracing_line_compares_three_stacks_and_counts_the_exported_spans(
    run: Finished,
) -> None:
    (record,) = assert_run_shape(run, {"composer_tracing": 1})
    assert record["concurrency"] == 16
    for variant in ("off", "sampled_100", "sampled_10"):
        assert_load(record, variant)
    assert_has(
        record,
        "throughput_loss.sampled_100",
        "throughput_loss.sampled_10",
        "p99_ratio.sampled_100",
        "server_cpu_ratio.sampled_10",
        "off_path_us_per_run",
        "off_path_share_of_server_cpu",
    )
    spans = record["spans_received"]
    # every run exported its spans at 100%; about one in ten at 10%
    assert spans["sampled_100"] > spans["sampled_10"]
    assert record["spans_per_run"]["sampled_100"] >= 10  # the run's tree, composer to worker
    assert record["off_path_us_per_run"] > 0
