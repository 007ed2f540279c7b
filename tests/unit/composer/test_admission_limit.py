"""The admission limit sized from the replicas' capacity: exact limits for given endpoint
sets, the floor and ceiling, updates as the sets change (admitted runs untouched), and a
fixed limit that ignores the sets."""

from __future__ import annotations

import contextlib
import logging

import pytest

from composer.admission import Admission, AtLimit
from composer.admission_limit import CEILING, FLOOR, SizedLimit, sized_limit
from composer.server import Composer
from composer.settings import ComposerSettings
from modelyard.endpoints import Endpoint, EndpointSet, HttpApi

API = HttpApi(url_template="https://api.example/v1", body_template="{}", response_path="x")


def replica(worker_id: str, capacity: int) -> Endpoint:
    return Endpoint(worker_id, f"{worker_id}.local:7000", capacity=capacity)


def endpoint_set(model: str, *endpoints: Endpoint) -> EndpointSet:
    return EndpointSet(model, 1, endpoints)


def refusal(admission: Admission) -> AtLimit:
    with pytest.raises(AtLimit) as caught, admission.admit():
        pass
    return caught.value


class Sets:
    """What RoutedClient.endpoint_sets returns, replaced by the test as the watches would."""

    def __init__(self, *sets: EndpointSet) -> None:
        self.sets = sets

    def __call__(self) -> tuple[EndpointSet, ...]:
        return self.sets


def test_the_limit_is_the_factor_times_the_calls_the_replicas_serve_at_once() -> None:
    sets = [endpoint_set("echo", replica("w1", 4), replica("w2", 4))]
    assert sized_limit(sets, factor=1.5) == 12
    assert sized_limit(sets, factor=2.0) == 16
    assert sized_limit([endpoint_set("m", replica("w1", 1), replica("w2", 2))], factor=1.5) == 5


def test_a_fraction_of_a_run_rounds_up_but_floating_point_noise_does_not() -> None:
    ten = [endpoint_set("echo", *(replica(f"w{i}", 1) for i in range(10)))]
    assert sized_limit(ten, factor=1.1) == 11  # 1.1 x 10 is 11.000000000000002
    assert sized_limit(ten, factor=1.15) == 12  # 11.5


def test_each_replica_counts_once_per_model_it_serves() -> None:
    sets = [
        endpoint_set("echo", replica("w1", 2), replica("w2", 2)),
        # the same model's route under a selector: the same replicas again, not more capacity
        endpoint_set("echo", replica("w2", 2)),
        # another model on w1: its own inference thread, so its own capacity
        endpoint_set("gpt2", replica("w1", 1)),
    ]
    assert sized_limit(sets, factor=1.5) == 8  # 1.5 x (2 + 2 + 1), rounded up


def test_replicas_of_unknown_capacity_count_as_one() -> None:
    registered_api = Endpoint("api-1", "api.example:443", http_api=API)  # capacity 0
    old_worker = replica("w-old", 0)
    sets = [endpoint_set("m", registered_api, old_worker, replica("w1", 2))]
    assert sized_limit(sets, factor=1.5) == 6  # 1.5 x (1 + 1 + 2)


def test_no_sets_or_empty_ones_give_the_floor_and_a_huge_cluster_the_ceiling() -> None:
    assert FLOOR == 2
    assert sized_limit([], factor=1.5) == FLOOR
    assert sized_limit([endpoint_set("nobody")], factor=1.5) == FLOOR
    assert sized_limit([endpoint_set("m", replica("w1", 1))], factor=0.5) == FLOOR
    big = [endpoint_set("m", *(replica(f"w{i}", 64) for i in range(200)))]
    assert sized_limit(big, factor=1.5) == CEILING == 10_000


def test_the_limit_follows_the_sets_and_lowering_it_keeps_admitted_runs() -> None:
    sets = Sets()
    admission = Admission(SizedLimit(sets, factor=1.5))
    assert admission.limit == FLOOR  # a cold composer still admits

    sets.sets = (endpoint_set("echo", replica("w1", 2), replica("w2", 2)),)
    assert admission.limit == 6
    with contextlib.ExitStack() as runs:
        for _ in range(5):
            runs.enter_context(admission.admit())
        # w2 left: 1.5 x 2 = 3, below the 5 runs in flight, which go on
        sets.sets = (endpoint_set("echo", replica("w1", 2)),)
        assert (admission.limit, admission.in_flight) == (3, 5)
        assert refusal(admission).metadata["limit"] == "3"
    assert admission.in_flight == 0

    sets.sets = (endpoint_set("echo", replica("w1", 2), replica("w3", 8)),)
    assert admission.limit == 15


def test_a_model_whose_route_retired_keeps_its_capacity_until_it_is_watched_again() -> None:
    echo = endpoint_set("echo", replica("w1", 2), replica("w2", 2))
    gpt2 = endpoint_set("gpt2", replica("w3", 4))
    sets = Sets(echo, gpt2)
    limit = SizedLimit(sets, factor=1.5)
    assert limit() == 12  # 1.5 x (2 + 2 + 4)
    sets.sets = (gpt2,)  # nobody called echo for a while: its route retired
    assert limit() == 12
    sets.sets = ()  # every route retired: still the cluster it was, not the floor
    assert limit() == 12
    sets.sets = (endpoint_set("echo", replica("w1", 2)),)  # echo watched again, w2 gone
    assert limit() == 9  # 1.5 x (2 + 4)


def test_each_change_of_the_limit_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sets = Sets(endpoint_set("echo", replica("w1", 2)))
    limit = SizedLimit(sets, factor=1.5)
    with caplog.at_level(logging.INFO, logger="composer.admission_limit"):
        assert (limit(), limit()) == (3, 3)
        sets.sets = (endpoint_set("echo", replica("w1", 2)),)  # new load, same capacity
        assert limit() == 3
        sets.sets = (endpoint_set("echo", replica("w1", 4)),)
        assert (limit(), limit()) == (6, 6)
    assert [r.getMessage() for r in caplog.records] == [
        "admission limit: 3 runs in flight (was 2)",
        "admission limit: 6 runs in flight (was 3)",
    ]


async def test_a_composer_sizes_its_limit_unless_one_is_set() -> None:
    sized = Composer(ComposerSettings(port=0))
    fixed = Composer(ComposerSettings(port=0, max_runs_in_flight=7))
    zero = Composer(ComposerSettings(port=0, max_runs_in_flight=0))
    try:
        assert (sized.admission.limit, fixed.admission.limit, zero.admission.limit) == (2, 7, 2)
    finally:
        for composer in (sized, fixed, zero):
            await composer.abort()


def test_a_fixed_limit_refuses_past_it() -> None:
    admission = Admission(2)
    with admission.admit(), admission.admit():
        refused = refusal(admission)
    assert refused.metadata["limit"] == "2"
    assert refused.reason == "OVERLOADED"
    assert refused.message.startswith("the composer is at its limit of 2 runs in flight")
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)
