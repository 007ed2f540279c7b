"""`python -m bench.worker --smoke --only streaming`: the same generation streamed and
unary at c=1 and c=4, the worker's CPU per request of each and their ratio, and at c=1 the
time to first token beside the decoding step and the round trip it is bounded by."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.common.children import run_json_child
from bench.common.load.driver import Level
from bench.worker.streaming import level_record
from tests.bench.smoke import LIMIT_S, REPO, Finished, assert_has, assert_load, assert_run_shape

pytestmark = [pytest.mark.smoke_run("worker_streaming"), pytest.mark.timeout(LIMIT_S + 30)]


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("worker_streaming")


def test_each_level_compares_the_streamed_generation_with_the_unary_one(run: Finished) -> None:
    records = assert_run_shape(run, {"streaming": 2})
    assert [record["concurrency"] for record in records] == [1, 4]
    for record in records:
        assert_load(record, "streamed")
        assert_load(record, "baseline")
        assert_has(record, "cpu_ms_per_req.streamed", "cpu_ms_per_req.unary", "cpu_ratio")
        assert "streamed CPU/request <= 1.1x unary" in record["checks"]
        # the verdict's ratio is the median of short rounds measured side by side
        assert len(record["streamed"]["p50_ms_rounds"]) == 3  # PAIRED_ROUNDS x 1 round
        # (a smoke round's CPU can read 0, psutil's tick being 10 ms: no ratio then)
        rounds = record["cpu_ratio_rounds"]["rounds"]
        assert len(rounds) <= 3
        if rounds:
            assert record["cpu_ratio"] == pytest.approx(statistics.median(rounds), abs=0.002)
        else:
            assert record["cpu_ratio"] is None
        assert_has(record, "cpu_ratio_of_medians")
        # every token of the stand-in's generation arrived as a chunk, then the result
        assert record["chunks"] == record["new_tokens"]
        assert record["streamed"]["total_p50_ms"] >= record["streamed"]["p50_ms"]


def test_c1_sets_the_time_to_first_token_beside_its_bound(run: Finished) -> None:
    record = run.records("streaming")[0]
    first = {**record["first_token"], "scenario": record["scenario"]}
    assert_load(first, "one_token")
    assert_load(first, "round_trip")
    assert first["ttft_p50_ms"] == record["streamed"]["p50_ms"]
    assert first["bound_ms"] == pytest.approx(
        1.2 * first["decode_step_ms"] + first["round_trip_p50_ms"], abs=0.01
    )
    assert_has(
        first,
        "one_token_unary_p50_ms",
        "ttft_to_bound",
        "ttft_to_one_token_unary",
        "fixed_cost_ms",
        "goal_holds_from_step_ms",
    )
    assert_has(first, "decode_step_cpu_ms", "streamed_step_ms")
    assert "ttft p50 <= 1.2x step + round trip" in record["checks"]


def test_c1_measures_what_a_chunk_alone_costs(run: Finished) -> None:
    record = run.records("streaming")[0]
    chunk = {**record["per_chunk"], "scenario": record["scenario"]}
    assert_load(chunk, "unary")
    assert_load(chunk, "streamed")
    assert_has(chunk, "cpu_us", "of_a_decoding_step")
    assert chunk["streamed"]["sample"]["chunks"] == record["new_tokens"]


def test_the_first_token_floor_times_the_workers_own_generation_in_process(
    tiny_checkpoints: dict[str, Path],
) -> None:
    """The floor beside the TTFT goal (real runs only; a smoke run has no checkpoint): the
    worker's text-generation adapter on a real checkpoint, in a child process."""
    floor = run_json_child(
        ["-m", "bench.worker.first_token_floor", str(tiny_checkpoints["tiny-gpt2"]), "1.5", "3"]
    )
    assert floor["pause_ms"] == 1.5
    assert floor["calls_each"] == 3
    assert floor["one_token_hot_p50_ms"] > 0
    assert floor["one_token_after_pause_p50_ms"] > 0
    # 32 tokens take longer than one, whatever the machine: a step is a positive time
    assert floor["decode_step_ms"] > 0


def test_a_real_runs_floor_sits_beside_the_bound(run: Finished) -> None:
    """A real run adds the in-process floor to the c=1 line (the smoke run's own figures,
    put back together, with a floor such as first_token_floor prints)."""
    record = run.records("streaming")[0]
    first, chunk = record["first_token"], record["per_chunk"]
    results = {
        "unary": record["baseline"],
        "streamed": record["streamed"],
        "one_token": first["one_token"],
        "round_trip": first["round_trip"],
        "ticks_unary": chunk["unary"],
        "ticks_streamed": chunk["streamed"],
    }
    floor = {"one_token_after_pause_p50_ms": 4.0, "one_token_hot_p50_ms": 3.0}
    level = Level(1, record["requests_per_round"], 4)
    rebuilt = level_record(level, results, record["cpu_ratio_rounds"], floor)
    assert rebuilt["checks"] == record["checks"]
    placed = rebuilt["first_token"]["floor"]
    assert placed["ttft_floor_ms"] == pytest.approx(first["round_trip_p50_ms"] + 4.0, abs=0.001)
    assert placed["bound_below_floor"] == (first["bound_ms"] < placed["ttft_floor_ms"])
    assert placed["one_token_hot_p50_ms"] == 3.0
    assert "floor" not in record["first_token"]  # a smoke run has no checkpoint to time


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-folder", "1", "3"], "is not a checkpoint folder (no config.json)"),
        (["CHECKPOINT", "-1", "3"], "argument pause_ms: '-1' is below 0"),
        (["CHECKPOINT", "1", "0"], "argument calls: '0' is below 1"),
        (["CHECKPOINT", "soon", "3"], "argument pause_ms: 'soon' is not a number"),
        (["CHECKPOINT"], "the following arguments are required: pause_ms, calls"),
    ],
)
def test_the_first_token_floor_refuses_bad_arguments_with_a_message(
    tiny_checkpoints: dict[str, Path], args: list[str], message: str
) -> None:
    checkpoint = str(tiny_checkpoints["tiny-gpt2"])
    argv = [checkpoint if arg == "CHECKPOINT" else arg for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker.first_token_floor", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
