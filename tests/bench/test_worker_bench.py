"""`python -m bench.worker --smoke`: every scenario runs and reports its documented fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("worker"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("worker")


def test_every_scenario_reports_a_line_and_the_results_file_holds_them(run: Finished) -> None:
    assert_run_shape(
        run,
        {
            "serving_overhead": 3,
            "predict_many": 2,
            "batching": 6,
            "batching_idle_paired": 2,
            "peak_rss": 1,
            "memory_worker": 2,
            "memory_stack": 1,
        },
    )


def test_serving_overhead_compares_the_worker_with_the_bare_echo_server(run: Finished) -> None:
    lines = run.records("serving_overhead")
    assert [(r["concurrency"], r["channels"]) for r in lines] == [(1, 1), (16, 1), (16, 4)]
    for record in lines:
        assert_load(record, "worker")
        assert_load(record, "baseline")
        assert_has(record, "ratios.p50", "ratios.p99", "ratios.throughput")
        assert_has(record, "ratios.server_cpu_per_req", "worker.server_cpu_pct")


def test_predict_many_compares_stream_messages_with_unary_calls(run: Finished) -> None:
    lines = run.records("predict_many")
    assert [r["concurrency"] for r in lines] == [1, 16]
    for record in lines:
        assert record["pass"] and record["errors"] == 0
        for path in ("baseline", "predict_many"):  # the baseline: unary Predict
            assert_has(record, f"{path}.p50_ms", f"{path}.throughput_rps")
            assert_has(record, f"{path}.worker_cpu_us_per_call", f"{path}.client_cpu_us_per_call")
        assert_has(record, "ratios.p50_ms", "ratios.worker_cpu_us_per_call")


def test_batching_reports_the_mean_batch_and_the_gain(run: Finished) -> None:
    lines = run.records("batching")
    assert [(r["task"], r["concurrency"]) for r in lines] == [
        (task, c) for task in ("text-classification", "text-generation") for c in (1, 8, 32)
    ]
    for record in lines:
        assert_load(record, "batched")
        assert_load(record, "baseline")
        assert_has(record, "throughput_ratio", "p50_ratio", "mean_batch_size")
        assert_has(record, "batched.mean_batch_size", "batched.model_calls")
        # the batch sizes were read from the worker's /metrics: its calls were counted
        assert record["batched"]["model_calls"] > 0
        assert record["baseline"]["model_calls"] > 0


def test_batching_at_c1_is_also_measured_call_by_call_for_each_task(run: Finished) -> None:
    lines = run.records("batching_idle_paired")
    assert [r["task"] for r in lines] == ["text-classification", "text-generation"]
    for record in lines:
        assert record["errors"] == {"batched": 0, "unbatched": 0}
        assert record["rounds"] == len(record["throughput_ratio_rounds"]) >= 1
        assert_has(record, "throughput_ratio", "p50_ratio", "batched.p50_ms", "baseline.p50_ms")
    # generation streams: its time to first token is judged the same way
    assert "stream_ttft" not in lines[0]
    assert lines[1]["stream_ttft"]["errors"] == {"batched": 0, "unbatched": 0}
    assert_has(lines[1], "stream_ttft.ttft_p50_ratio", "stream_ttft.batched_p50_ms")


def test_batched_generation_reports_its_streamed_time_to_first_token(run: Finished) -> None:
    (record,) = [r for r in run.records("batching") if r.get("stream_ttft")]
    assert (record["task"], record["concurrency"]) == ("text-generation", 1)
    streams = {**record["stream_ttft"], "scenario": record["scenario"]}
    assert_load(streams, "batched")
    assert_load(streams, "baseline")
    assert_has(record, "stream_ttft.ttft_p50_ratio", "stream_ttft.batched.total_p50_ms")


def test_peak_rss_samples_both_workers_from_spawn(run: Finished) -> None:
    (record,) = run.records("peak_rss")
    for side in ("worker", "baseline"):
        assert_has(record, f"{side}.rss_peak_mb", f"{side}.rss_ready_mb", f"{side}.load")
        assert record[side]["samples"] > 0
        assert record[side]["rss_peak_mb"] >= record[side]["rss_ready_mb"] > 0
    assert set(record["worker"]["load"]) == {"sentiment", "nli", "gpt2"}
    assert_has(record, "models_delta_peak_mb", "worker.rss_peak_main_process_mb")


def test_memory_measures_each_worker_and_says_what_it_imported(run: Finished) -> None:
    echo, tiny = run.records("memory_worker")
    for record in (echo, tiny):
        for moment in ("at_ready", "after_load"):
            assert_has(record, *(f"worker.{moment}.{kind}_mb" for kind in ("rss", "pss", "uss")))
        assert record["worker"]["load"]["ok"] > 0 and record["worker"]["errors"] == 0
        assert "skipped" in record["baseline"]  # a smoke run has no eager baseline
    # Echo stands in for the tiny model in a smoke run: neither imports torch
    assert echo["worker"]["imported"] == tiny["worker"]["imported"] == []
    assert echo["checks"]["imports neither torch nor transformers"] is True
    assert "RSS after load <= 350 MB" in tiny["checks"]


def test_memory_measures_every_process_of_the_stack(run: Finished) -> None:
    (record,) = run.records("memory_stack")
    # the smoke stack: supervisor, etcd, control plane, one worker, composer, gateway
    assert set(record["after_load_mb"]) == {
        "supervisor", "etcd", "controlplane", "worker stand-ins", "composer", "gateway",
    }  # fmt: skip
    rss = sum(m["rss_mb"] for m in record["after_load_mb"].values())
    assert record["total_mb"]["rss"]["after_load"] == pytest.approx(rss, abs=0.2)
    assert record["total_mb"]["pss"]["after_load"] <= record["total_mb"]["rss"]["after_load"]
    assert record["load"]["errors"] == 0 and record["load"]["ok"] > 0
    assert_has(record, "rss_peak_total_mb", "without_gateway_rss_mb", "baseline.bentoml_rss_mb")
