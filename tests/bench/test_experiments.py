"""The what-ifs: the patched-worker comparison (`profile_worker whatif --smoke`) and the
balancer simulation run and report what bench/README.md documents."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.bench.smoke import LIMIT_S, REPO, Finished, assert_has


@pytest.mark.smoke_run("profile_worker")
@pytest.mark.timeout(LIMIT_S + 30)
def test_whatif_measures_each_variant_beside_the_worker(
    smoke_result: Callable[[str], Finished],
) -> None:
    run = smoke_result("profile_worker")
    (result,) = run.lines
    assert run.document() == result
    assert result["target"] == "echo"
    assert set(result["medians"]) == {"echo c=1"}  # a smoke run measures the first level
    for level in result["medians"].values():
        assert set(level) == {"bare echo server", "worker as is", "nometrics,nointerceptor"}
        for figures in level.values():
            assert_has(figures, "p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_req")
            assert figures["throughput_rps"] > 0


def test_the_balancer_simulation_reproduces_the_documented_legacy_figures() -> None:
    """Deterministic (a virtual clock, seeded randomness), and the legacy balancer is a copy
    that nothing else changes: its figures stay those bench/README.md reports."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.experiments.balance_sim"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = {line["variant"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert set(lines) == {
        "ideal_round_robin", "ideal_p2c", "ideal_p2c_before", "p2c", "least_loaded",
        "round_robin", "p2c_before", "p2c_before_live_calls_only",
    }  # fmt: skip
    # "Control plane: profiling notes": p2c before the fix (31.8 / 248.9 ms), with the
    # herding fixed alone (144.4 ms), and on the two fast replicas (78.4 / 82.2 ms)
    assert (lines["p2c_before"]["p50_ms"], lines["p2c_before"]["p99_ms"]) == (31.83, 248.87)
    assert lines["p2c_before_live_calls_only"]["p99_ms"] == 144.38
    ideal_before = lines["ideal_p2c_before"]
    assert (ideal_before["p50_ms"], ideal_before["p99_ms"]) == (78.37, 82.24)
    for line in lines.values():
        assert_has(line, "p50_ms", "p99_ms", "max_ms", "throughput_rps", "served", "p99_vs_ideal")
