"""The per-node figures of one interleaved round (bench.composer.hop_paired), from known
latencies and CPU times."""

from __future__ import annotations

import pytest

from bench.composer.hop_paired import record, round_figures


def test_a_round_gives_the_composer_and_the_relay_per_node_over_a_direct_predict() -> None:
    calls = 100
    figures = round_figures(
        # a direct chain of 3 Predicts takes 3 ms: a Predict round trip is 1 ms
        {"composer": [0.0045] * calls, "relay": [0.0036] * calls, "direct": [0.003] * calls},
        {
            "composer": 0.24,  # 2.4 ms a run: 0.8 ms a node
            "relay": 0.15,  # 0.5 ms a node
            # 3 paths x 3 Predicts x 100 iterations = 900 Predicts: 0.9 ms each
            "127.0.0.1:1": 0.27,
            "127.0.0.1:2": 0.27,
            "127.0.0.1:3": 0.27,
        },
        # the direct chains alone: 50 runs, 150 Predicts, 1 ms each (the composer's stream
        # messages, in the round, cost the workers less)
        {"runs": 50, "workers_cpu_s": 0.15},
    )
    assert figures["direct_predict_p50_ms"] == pytest.approx(1.0)
    assert figures["worker_cpu_per_predict_ms"] == pytest.approx(1.0)
    assert figures["worker_cpu_all_paths_ms"] == pytest.approx(0.9)
    assert figures["composer"]["added_latency_p50_ms"] == pytest.approx(0.5)
    assert figures["composer"]["latency_ratio"] == pytest.approx(0.5)
    assert figures["composer"]["cpu_ratio"] == pytest.approx(0.8)
    assert figures["relay"]["latency_ratio"] == pytest.approx(0.2)
    assert figures["relay"]["cpu_ratio"] == pytest.approx(0.5)


def test_a_path_that_answered_nothing_fails_the_verdict_without_figures() -> None:
    failed_round = {
        "latencies": {"composer": [], "relay": [0.003], "direct": [0.002]},
        "cpu_s": {"composer": 0.01, "relay": 0.01, "127.0.0.1:1": 0.01},
        "direct_block": {"runs": 5, "workers_cpu_s": 0.01},
    }
    sample = {"text": "The quick brown fox"}
    line = record(
        {
            "rounds": [failed_round],
            "errors": {"composer": 5, "relay": 0, "direct": 0},
            "sample": dict.fromkeys(("composer", "relay", "direct"), sample),
        },
        iterations=5,
    )
    assert line["pass"] is False and line["checks"]["no errors"] is False
    assert line["composer"]["cpu_ratio"] is None and line["cpu_ratio_rounds"] == []
