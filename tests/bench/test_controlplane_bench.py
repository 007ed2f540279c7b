"""`python -m bench.controlplane --smoke`: every scenario runs and reports its documented
fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.controlplane.election_watch import Sample
from bench.controlplane.stall import second_leaders, tolerance
from tests.bench.smoke import LIMIT_S, Finished, assert_has, assert_run_shape

pytestmark = [pytest.mark.smoke_run("controlplane"), pytest.mark.timeout(LIMIT_S + 30)]
VARIANTS = {"ideal_round_robin", "ideal_p2c", "p2c", "round_robin", "least_loaded"}


@pytest.fixture(scope="module")
def run(smoke_result: Callable[[str], Finished]) -> Finished:
    return smoke_result("controlplane")


def test_every_scenario_reports_a_line_and_the_results_file_holds_them(run: Finished) -> None:
    expected = {
        "controlplane_balancing": 1,
        "controlplane_failure": 1,
        "controlplane_scale": 1,
        "controlplane_cost": 1,
        "controlplane_hung_replica": 1,
        "controlplane_leader_stall": 1,
    }
    assert_run_shape(run, expected)


def test_balancing_measures_every_policy_and_counts_calls_per_worker(run: Finished) -> None:
    (record,) = run.records("controlplane_balancing")
    assert set(record["variants"]) == VARIANTS == set(record["ratios_to_ideal"])
    assert record["ideal"] in ("ideal_round_robin", "ideal_p2c")
    for name, variant in record["variants"].items():
        assert_has(variant, "p50_ms", "p99_ms", "throughput_rps", "client_cpu_pct", "retries")
        assert_has(variant, "share_pct", "disturbed_rounds", "rounds")
        assert variant["ok"] > 0
        assert sum(variant["served"].values()) > 0, name  # read from the workers' /metrics
        selector = "speed=fast" if name.startswith("ideal") else ""
        assert variant["selector"] == selector
    assert record["variants"]["ideal_round_robin"]["served"]["slow-1"] == 0


def test_failure_kills_a_worker_under_load_and_times_its_withdrawal(run: Finished) -> None:
    (record,) = run.records("controlplane_failure")
    assert_has(record, "load.ok", "load.errors", "load.retries", "load.cpu.other_cpu_pct")
    assert_has(record, "kill.victim_in_flight_at_kill", "kill.withdrawn_after_s")
    assert_has(record, "kill.key_expired_after_s", "kill.around_kill.max_ms")
    assert_has(record, "kill.retries_after_kill_s")
    assert record["load"]["ok"] > 0
    assert "fail-2" not in record["load"]["endpoints_at_end"]


def test_scale_times_changes_on_a_fleet_and_reports_the_control_plane(run: Finished) -> None:
    (record,) = run.records("controlplane_scale")
    assert_has(record, "startup.full_set_at_subscriber_s", "startup.all_probed_s")
    assert_has(record, "steady_state.controlplane_cpu_pct", "steady_state.controlplane_rss_mb")
    assert_has(record, "during_changes.controlplane_cpu_pct", "gc.gen2_pauses")
    for group in ("all", "registration", "health"):
        assert_has(record, f"changes.{group}.p50_ms", f"changes.{group}.p99_ms")
        assert_has(record, f"changes.{group}.missed")
    assert set(record["changes"]["by_kind"]) == {"delete", "put", "not_serving", "serving"}
    assert record["changes"]["all"]["count"] > 0
    assert_has(record, "more_subscribers.subscribers", "more_subscribers.changes.p99_ms")
    assert_has(record, "leadership_lost")


def test_cost_reports_the_curve_and_the_work_per_change(run: Finished) -> None:
    (record,) = run.records("controlplane_cost")
    assert [point["workers"] for point in record["curve"]] == [20, 50]
    for point in record["curve"]:
        assert_has(point, "cold_start_s", "changes.p99_ms", "sets_computed_per_change")
        assert_has(point, "messages_built_per_change")
        assert point["changes"]["count"] == point["subscribers"] * 4
    assert record["checks"]["one_set_per_change"] and record["checks"]["one_message_per_change"]


def test_hung_replica_stops_a_worker_under_load_with_rescue_off_then_on(run: Finished) -> None:
    (record,) = run.records("controlplane_hung_replica")
    assert [record["before"]["rescue"], record["after"]["rescue"]] == [False, True]
    for variant in (record["before"], record["after"]):
        assert_has(variant, "requests", "ok", "failed", "errors", "completed_during_stop")
        assert_has(variant, "latency.p50_ms", "latency.p99_ms", "latency.max_ms")
        assert_has(variant, "started_during_stop.p99_ms", "victim_in_flight_at_stop")
        assert_has(variant, "left_set_after_s", "back_in_set_after_resume_s")
        assert_has(variant, "retries.silent", "retries.left_set", "retries.before_stop")
        assert variant["ok"] > 0 and variant["replicas_at_start"] == 2
    assert_has(record, "failed_before", "failed_after")


def test_leader_stall_stops_the_leader_and_reports_each_trial_beside_the_bound(
    run: Finished,
) -> None:
    (record,) = run.records("controlplane_leader_stall")
    (at_default,) = record["ttls"]  # the smoke run: the default TTL only
    assert at_default["election_ttl"] == 5.0 and at_default["lease_ttl_s"] == 5
    assert_has(at_default, "refresh_every_s", "margin_s", "bound_s.worst", "bound_s.best")
    assert_has(at_default, "tolerance_s", "first_lost_s")
    assert at_default["bound_s"]["worst"] < at_default["bound_s"]["best"]
    (trial,) = at_default["trials"]
    assert_has(trial, "phase", "stall_s", "stalled_s", "since_refresh_s", "since_refresh_pm_s")
    assert_has(trial, "phase_error_s", "phase_attempts", "phase_missed")
    assert_has(trial, "budget_left_s", "predicted_kept", "kept", "stepped_down", "key_changed")
    assert_has(trial, "step_down_reasons", "leader_before", "leader_after")
    assert_has(trial, "leader_again_after_stop_s", "second_leader_samples")
    assert trial["leader_before"] in {"cp-stall-ttl5-a", "cp-stall-ttl5-b"}
    assert trial["stalled_s"] >= trial["stall_s"]  # the leader really was stopped that long
    assert_has(record, "loadavg_before", "loadavg_after")


def test_a_second_leader_is_one_that_leads_while_the_key_names_another_before_and_after() -> None:
    a, b = ("a", 1), ("b", 2)
    taking_over = [Sample(0.0, a, frozenset({"b"})), Sample(0.05, b, frozenset({"b"}))]
    assert second_leaders(taking_over) == 0  # the key moved to b while b's answer was on the way
    both = [Sample(0.0, a, frozenset({"a", "b"})), Sample(0.05, a, frozenset({"a"}))]
    assert second_leaders(both) == 1
    vacant = [Sample(0.0, None, frozenset({"b"})), Sample(0.05, None, frozenset())]
    assert second_leaders(vacant) == 0  # b may have won the vacant key a moment before


def test_the_tolerance_is_the_longest_stall_kept_below_the_first_lost() -> None:
    trials = [
        {"phase": "worst", "stall_s": 3.0, "kept": False},
        {"phase": "worst", "stall_s": 1.0, "kept": True},
        {"phase": "worst", "stall_s": 4.0, "kept": True},  # beyond a loss: not a tolerance
        {"phase": "worst", "stall_s": 2.0, "kept": True},
        {"phase": "best", "stall_s": 1.0, "kept": False},
    ]
    assert tolerance(trials, "worst") == (2.0, 3.0)
    assert tolerance(trials, "best") == (None, 1.0)
    assert tolerance([{"phase": "best", "stall_s": 1.0, "kept": True}], "best") == (1.0, None)
