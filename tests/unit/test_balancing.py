"""The balancer on a fake clock and a seeded random generator: every pick is reproducible.

Where a test counts picks, its bound comes from the algorithm, not from the seed's luck:
when costs tie, p2c takes the first of a uniformly drawn pair, so each pick is uniform over
the candidates and a replica's count is binomial (`uniform_share`).
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from modelyard.balancing import (
    LATENCY_TTL_S,
    MAX_LATENCY_WEIGHT,
    MIN_SAMPLES,
    SAME_SPEED_BAND,
    Balancer,
)
from modelyard.endpoints import Endpoint, Load
from modelyard.errors import InvalidArgument, Unavailable
from modelyard.selectors import parse_selector
from tests.support.clock import FakeClock


def replica(
    worker_id: str,
    in_flight: int = 0,
    queue_depth: int = 0,
    latency_ms: float = 0.0,
    **tags: str,
) -> Endpoint:
    return Endpoint(
        worker_id, f"10.0.0.{worker_id[-1]}:50051", tags, Load(in_flight, queue_depth, latency_ms)
    )


def balancer(policy: str = "p2c", *endpoints: Endpoint, clock: FakeClock | None = None) -> Balancer:
    b = Balancer(policy, model="m", clock=clock or FakeClock(), rng=random.Random(7))
    b.update(endpoints)
    return b


async def measure(b: Balancer, clock: FakeClock, worker_id: str, seconds: float) -> None:
    """Enough successful calls of `seconds` each, timed by `clock`, for the balancer to trust
    its own reading (the first call to a replica also opens its channel and is not used)."""
    for _ in range(MIN_SAMPLES + 1):
        with b.track(worker_id):
            await clock.advance(seconds)


def picks(b: Balancer, n: int, **kwargs: object) -> Counter[str]:
    return Counter(b.pick(**kwargs).worker_id for _ in range(n))  # type: ignore[arg-type]


def uniform_share(n: int, candidates: int) -> range:
    """Where each candidate's count of `n` uniform picks lands: Binomial(n, 1/candidates)
    within 4 standard deviations, which all but about 1 seed in 15,000 meet."""
    p = 1 / candidates
    spread = 4 * math.sqrt(n * p * (1 - p))
    return range(math.ceil(n * p - spread), math.floor(n * p + spread) + 1)


def test_p2c_takes_the_faster_of_two() -> None:
    b = balancer("p2c", replica("w1", latency_ms=50), replica("w2", latency_ms=5))
    assert picks(b, 50) == {"w2": 50}


def test_reported_in_flight_alone_does_not_steer_picks() -> None:
    # A snapshot re-sent once a second (and counting our own calls) made every caller shun
    # the busiest replica of the snapshot for a whole second; only live counts steer.
    b = balancer("p2c", replica("w1", in_flight=50, queue_depth=9), replica("w2"))
    counts = picks(b, 2000)
    assert counts["w1"] in uniform_share(2000, 2), counts


def test_p2c_never_picks_an_idle_replica_ten_times_slower() -> None:
    endpoints = [replica(f"w{i}", latency_ms=5) for i in range(1, 5)]
    endpoints.append(replica("w9", latency_ms=50))
    counts = picks(balancer("p2c", *endpoints), 4000)
    # it only wins when sampled against itself, which p2c never does: never chosen
    assert counts["w9"] == 0
    # each fast one wins when drawn first (1/5), or second against w9 (1/5 x 1/4): 1/4
    assert all(counts[f"w{i}"] in uniform_share(4000, 4) for i in range(1, 5)), counts


def test_p2c_spreads_evenly_when_load_is_equal() -> None:
    counts = picks(balancer("p2c", replica("w1"), replica("w2"), replica("w3")), 3000)
    assert all(counts[w] in uniform_share(3000, 3) for w in ("w1", "w2", "w3")), counts


async def test_speeds_within_the_band_count_as_equal() -> None:
    # measurement noise on a busy host is not speed: nobody is favoured or starved for it
    clock = FakeClock()
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"), clock=clock)
    await measure(b, clock, "w1", 0.010)
    await measure(b, clock, "w2", 0.010 * SAME_SPEED_BAND * 0.95)
    await measure(b, clock, "w3", 0.010 / SAME_SPEED_BAND * 1.05)
    assert {b.cost(w) for w in ("w1", "w2", "w3")} == {1.0}
    counts = picks(b, 3000)
    assert all(counts[w] in uniform_share(3000, 3) for w in ("w1", "w2", "w3")), counts


async def test_one_trusted_reading_alone_does_not_steer_picks() -> None:
    """Until a second replica's speed is known, a reading has only itself to compare with:
    the picks are the seeded pair draws alone, however slow the reading. (The routed client
    integration test relies on this for its first calls.)"""
    clock = FakeClock()
    endpoints = [replica("w1"), replica("w2"), replica("w3")]
    measured = balancer("p2c", *endpoints, clock=clock)
    await measure(measured, clock, "w2", 5.0)  # absurdly slow, and trusted
    plain = balancer("p2c", *endpoints)
    assert [measured.pick().worker_id for _ in range(50)] == [
        plain.pick().worker_id for _ in range(50)
    ]


async def test_a_ten_times_slower_replica_gets_fewer_calls_but_is_not_starved() -> None:
    clock = FakeClock()
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"), clock=clock)
    for worker_id, seconds in (("w1", 0.005), ("w2", 0.005), ("w3", 0.050)):
        await measure(b, clock, worker_id, seconds)
    assert b.cost("w3") == pytest.approx(10.0)
    for _ in range(60):  # callers that hold their calls open
        b.begin(b.pick().worker_id)
    fast, slow = [b.in_flight("w1"), b.in_flight("w2")], b.in_flight("w3")
    # w3's k-th call needs a pair where it costs no more: 10 x k <= 1 + a fast one's queue
    assert slow > 0 and 10 * slow <= max(fast) + 1, (fast, slow)
    assert sum(fast) + slow == 60


def test_local_in_flight_counts_steer_picks() -> None:
    b = balancer("p2c", replica("w1"), replica("w2"))
    for _ in range(3):
        b.begin("w1")
    assert b.in_flight("w1") == 3
    assert picks(b, 20) == {"w2": 20}
    for _ in range(3):
        b.end("w1", None)
    b.begin("w2")
    assert picks(b, 20) == {"w1": 20}
    b.end("w2")
    b.end("w2")  # one end too many never goes negative
    assert b.in_flight("w2") == 0


def test_calls_in_flight_spread_over_replicas() -> None:
    """Callers that hold their calls open fill the replicas evenly."""
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"))
    for _ in range(30):
        b.begin(b.pick().worker_id)
    counts = [b.in_flight(w) for w in ("w1", "w2", "w3")]
    assert sum(counts) == 30 and max(counts) - min(counts) <= 2, counts


def test_cost_formula() -> None:
    b = balancer(
        "p2c",
        replica("w1", in_flight=1, latency_ms=20),  # 20 ms with one call in flight: 10 per call
        replica("w2", latency_ms=20),
        replica("w3", latency_ms=400),
        replica("w4"),
    )
    # median service time of those that report one is 20 ms; w4 reports none: weight 1
    b.begin("w1")
    assert b.cost("w1") == (1 + 1) * 0.5
    assert b.cost("w2") == 1.0
    assert b.cost("w3") == MAX_LATENCY_WEIGHT  # 20x slower, clamped
    assert b.cost("w4") == 1.0


def test_a_slow_replica_is_avoided_until_its_peers_queue_up() -> None:
    b = balancer(
        "least_loaded",
        replica("w1", latency_ms=10),
        replica("w2", latency_ms=10),
        replica("w3", latency_ms=40),  # 4x the median
    )
    for _ in range(8):  # callers that hold their calls open
        b.begin(b.pick().worker_id)
    assert [b.in_flight(w) for w in ("w1", "w2", "w3")] == [4, 4, 0]
    assert b.pick().worker_id == "w3"  # cost 1 x 4, against (1 + 4) x 1


async def test_own_latency_measurements_override_reports_while_fresh() -> None:
    clock = FakeClock()
    b = balancer(
        "least_loaded",
        *(replica(w, latency_ms=10) for w in ("w1", "w2", "w3")),
        clock=clock,
    )
    b.begin("w1")
    b.end("w1", 0.040)
    assert b.cost("w1") == 1.0  # one reading is not yet trusted over the report
    await measure(b, clock, "w1", 0.040)  # we measured 40 ms where it reported 10 ms
    assert b.cost("w1") == pytest.approx(4.0)
    assert b.pick().worker_id in {"w2", "w3"}
    b.begin("w1")
    b.end("w1", 0.010)  # an EWMA, not the last reading
    assert b.cost("w1") == pytest.approx((0.3 * 10 + 0.7 * 40) / 10)
    await clock.advance(LATENCY_TTL_S - 0.5)
    assert b.cost("w1") == pytest.approx((0.3 * 10 + 0.7 * 40) / 10)  # still fresh
    await clock.advance(1.0)  # stale: back to what the control plane reports
    assert b.cost("w1") == 1.0


def test_a_calls_latency_counts_per_call_of_ours_ahead_of_it() -> None:
    clock = FakeClock()
    b = balancer("p2c", *(replica(w, latency_ms=10) for w in ("w1", "w2", "w3")), clock=clock)
    assert (b.begin("w1"), b.begin("w1")) == (0, 1)  # the second is queued behind the first
    b.end("w1")
    b.end("w1")
    for _ in range(MIN_SAMPLES + 1):
        first, second = b.begin("w1"), b.begin("w1")
        b.end("w1", 0.010, first)
        b.end("w1", 0.020, second)  # 20 ms with one ahead: still 10 ms of work per call
    assert b.cost("w1") == pytest.approx(1.0)  # 2.0 if the wait were taken for slowness


async def test_the_first_call_to_a_replica_is_not_timed() -> None:
    # it also opened the channel (a connection, maybe TLS): that says nothing of its speed
    clock = FakeClock()
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"), clock=clock)
    with b.track("w1"):
        await clock.advance(1.0)
    for _ in range(MIN_SAMPLES):
        with b.track("w1"):
            await clock.advance(0.010)
    for worker_id in ("w2", "w3"):
        await measure(b, clock, worker_id, 0.010)
    assert b.cost("w1") == 1.0


async def test_failures_are_not_timed() -> None:
    clock = FakeClock()
    b = balancer("p2c", *(replica(w, latency_ms=100) for w in ("w1", "w2", "w3")), clock=clock)

    async def fail_fast() -> None:
        with b.track("w1"):
            await clock.advance(0.001)  # a fast failure must not make w1 look fast
            raise RuntimeError("refused")

    for _ in range(MIN_SAMPLES + 1):
        with pytest.raises(RuntimeError):
            await fail_fast()
    assert b.cost("w1") == 1.0 and b.in_flight("w1") == 0
    for _ in range(MIN_SAMPLES + 1):
        with b.track("w2"):
            assert b.in_flight("w2") == 1
            await clock.advance(0.2)
    assert b.cost("w2") == pytest.approx(2.0) and b.in_flight("w2") == 0


def test_round_robin_cycles_in_worker_id_order() -> None:
    b = balancer("round_robin", replica("w3"), replica("w1", queue_depth=99), replica("w2"))
    assert [b.pick().worker_id for _ in range(7)] == ["w1", "w2", "w3", "w1", "w2", "w3", "w1"]


def test_round_robin_resumes_where_it_was_after_the_set_changes() -> None:
    b = balancer("round_robin", replica("w1"), replica("w2"), replica("w4"))
    assert [b.pick().worker_id for _ in range(2)] == ["w1", "w2"]
    b.update([replica("w1"), replica("w3"), replica("w4")])
    assert [b.pick().worker_id for _ in range(3)] == ["w3", "w4", "w1"]


def test_least_loaded_takes_the_minimum_and_breaks_ties_at_random() -> None:
    b = balancer("least_loaded", replica("w1"), replica("w2"), replica("w3"))
    for worker_id in ("w1", "w1", "w1", "w2", "w3"):
        b.begin(worker_id)
    counts = picks(b, 1000)
    assert counts["w1"] == 0 and 400 < counts["w2"] < 600, counts
    b.begin("w2")
    assert picks(b, 20) == {"w3": 20}


def test_update_keeps_counters_of_replicas_that_stay_and_forgets_leavers() -> None:
    b = balancer("p2c", replica("w1"), replica("w2"))
    b.begin("w1")
    b.begin("w2")
    b.begin("w2")
    b.update([replica("w2", in_flight=7), replica("w3")])
    assert [e.worker_id for e in b.endpoints] == ["w2", "w3"]
    assert b.in_flight("w2") == 2 and b.cost("w2") == 1 + 2  # same counter, fresh endpoint
    assert b.in_flight("w1") == 0
    b.end("w1")  # a call that outlived its replica's membership is harmless
    b.update([replica("w1"), replica("w2")])
    assert b.in_flight("w1") == 0 and b.in_flight("w2") == 2


def test_exclude() -> None:
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"))
    assert picks(b, 20, exclude={"w1", "w3"}) == {"w2": 20}
    with pytest.raises(Unavailable) as caught:
        b.pick(exclude=["w1", "w2", "w3"])
    assert caught.value.message == (
        "no replica of model 'm' is available (3 replicas known, 3 already tried)"
    )


def test_selector_narrows_the_candidates() -> None:
    b = balancer(
        "p2c",
        replica("w1", device="cpu", latency_ms=10),
        replica("w2", device="cuda", gpu_memory="16GiB", latency_ms=10),
        replica("w3", device="cuda", gpu_memory="80GiB", latency_ms=200),
    )
    assert picks(b, 50, selector=parse_selector("device=cuda")) == {"w2": 50}
    assert picks(b, 5, selector=parse_selector("gpu_memory>=40GiB")) == {"w3": 5}
    assert set(picks(b, 50, selector=parse_selector(""))) == {"w1", "w2"}


def test_unavailable_when_nothing_matches() -> None:
    b = balancer("p2c", replica("w1", device="cpu"), replica("w2"), replica("w3"))
    with pytest.raises(Unavailable) as caught:
        b.pick(parse_selector("device=cuda"))
    assert caught.value.message == (
        "no replica of model 'm' matches selector 'device=cuda' (3 replicas known)"
    )
    b.update([])
    with pytest.raises(Unavailable, match=r"^no replica of model 'm' is available \(0 replicas"):
        b.pick()


async def test_ejected_replicas_are_avoided_for_a_while_unless_they_are_the_last() -> None:
    clock = FakeClock()
    b = balancer("round_robin", replica("w1"), replica("w2"), clock=clock)
    b.eject("w1", 2.0)
    assert picks(b, 4) == {"w2": 4}
    assert b.pick(exclude={"w2"}).worker_id == "w1"  # better to try it than to fail
    await clock.advance(2.0)
    assert picks(b, 4) == {"w1": 2, "w2": 2}


async def test_p2c_skips_an_ejected_replica_until_eject_s_has_passed() -> None:
    clock = FakeClock()
    b = balancer("p2c", replica("w1"), replica("w2"), replica("w3"), clock=clock)
    b.eject("w2", 2.0)
    assert "w2" not in picks(b, 300)
    await clock.advance(1.5)
    assert "w2" not in picks(b, 300)
    await clock.advance(0.5)
    assert picks(b, 3000)["w2"] in uniform_share(3000, 3)


def test_single_candidate_and_unknown_policy() -> None:
    assert balancer("p2c", replica("w1")).pick().worker_id == "w1"
    with pytest.raises(InvalidArgument, match="unknown balancing policy 'random'"):
        Balancer("random")
