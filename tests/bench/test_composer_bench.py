"""`python -m bench.composer --smoke`: every scenario runs on one stack of stand-ins
(no BentoML) and reports its documented fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("composer"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("composer")


def test_every_scenario_reports_a_line_and_the_results_file_holds_them(run: Finished) -> None:
    expected = {
        "composer_hop": 2,
        "composer_hop_paired": 1,
        "composer_graph": 2,
        "composer_graph_probe": 1,
        "composer_rss": 1,
        "composer_stream": 2,
    }
    assert_run_shape(run, expected)


def test_hop_compares_the_composer_with_direct_calls(run: Finished) -> None:
    lines = run.records("composer_hop")
    assert [r["concurrency"] for r in lines] == [1, 16]
    for record in lines:
        assert_load(record, "composer")
        assert_load(record, "baseline")
        assert_has(record, "added_per_hop_ms.p50", "added_per_hop_ms.p99", "throughput_ratio")
        assert {"etcd", "controlplane", "composer", "relay"} <= set(record["server_processes"])
        # the chain's outputs were checked against its inputs before timing
        assert record["composer"]["sample"] == {"text": "The quick brown fox"}


def test_hop_measures_the_bare_relay_floor_beside_the_goal(run: Finished) -> None:
    for record in run.records("composer_hop"):
        assert_load(record, "relay")
        # the relay ran the same chain on the same workers: its outputs were checked too
        assert record["relay"]["sample"] == {"text": "The quick brown fox"}
        assert_has(
            record,
            "per_node.latency_ratio",
            "per_node.cpu_ratio",
            "per_node.floor.latency_ratio",
            "per_node.floor.cpu_ratio",
            "per_node.floor.added_latency_p50_ms",
            "per_node.floor.cpu_ms",
            "per_node.composer_over_floor.added_latency_p50_ms",
            "per_node.composer_over_floor.cpu_ms",
            "per_node.composer_over_floor.latency_x_floor",
            "per_node.composer_over_floor.cpu_x_floor",
        )
        floor = record["per_node"]["floor"]
        assert isinstance(floor["latency_goal_below_floor"], bool)
        assert isinstance(floor["cpu_goal_below_floor"], bool)
        # the floor is reported beside the verdict, never part of it
        assert not any("floor" in check for check in record["checks"])


def test_the_per_node_verdict_interleaves_the_three_paths(run: Finished) -> None:
    (record,) = run.records("composer_hop_paired")
    assert record["errors"] == {"composer": 0, "relay": 0, "direct": 0}
    assert record["checks"]["same outputs on every path"]
    assert {"latency ratio <= 0.5", "cpu ratio <= 0.7"} <= set(record["checks"])
    assert len(record["cpu_ratio_rounds"]) == len(record["latency_ratio_rounds"]) == 2
    assert_has(record, "composer.latency_ratio", "composer.cpu_ratio", "relay.cpu_ratio")
    # composer_hop's lines no longer hold the per-node goal: one verdict for one goal
    for line in run.records("composer_hop"):
        assert set(line["checks"]) == {"no errors"}


def test_graph_runs_the_seed_graph_and_says_the_baseline_was_skipped(run: Finished) -> None:
    lines = run.records("composer_graph")
    assert [r["concurrency"] for r in lines] == [1, 16]
    for record in lines:
        assert_load(record, "modelyard")
        assert_has(record, "modelyard_stack_idle_cpu_pct", "throughput_ratio", "p99_ratio")
        assert set(record["modelyard"]["sample"]) >= {"gpt2_text", "distilgpt2_score"}
        assert "skipped" in record["baseline"]


def test_probe_and_rss_report_the_generators_and_the_stack(run: Finished) -> None:
    (probe,) = run.records("composer_graph_probe")
    assert set(probe["p50_ms"]) == {"gpt2 alone", "distilgpt2 alone", "both at once"}
    assert_has(probe, "serialisation", "workers.gpt2", "server_cpu_ms_per_req")
    (rss,) = run.records("composer_rss")
    assert_has(rss, "stack.peak_total_mb", "stack.mean_total_mb", "stack.at_ready_total_mb")
    assert rss["stack"]["samples"] > 0
    assert set(rss["stack"]["peak_mb"]) == set(rss["stack"]["processes"])
    # issue 12's goal; BentoML's side is checked only when it ran (not in a smoke run)
    assert set(rss["checks"]) == {"sampled during the load", "peak <= 1.4 GB"}


def test_stream_times_the_first_downstream_result(run: Finished) -> None:
    words, as_deployed = run.records("composer_stream")
    assert_load(words, "streamed")
    assert_load(words, "baseline")
    assert_has(words, "first_result_ratio_p50", "streamed.segments", "graph.nodes")
    assert words["streamed"]["segments"] > 1  # word segments: one result per word
    assert_load(as_deployed, "streamed")
    assert_has(as_deployed, "first_result_ratio_p50", "streamed.segments")
