"""The endpoint hub: whole sets, a new version only when membership changes, the latest
set only for a slow reader, and periodic re-offers with fresh load."""

from __future__ import annotations

import asyncio

from controlplane.hub import EndpointHub
from modelyard.endpoints import Endpoint, EndpointSet, Load
from modelyard.selectors import Selector, parse_selector
from modelyard_server.aio import cancel_and_wait
from tests.support.clock import FakeClock
from tests.unit.controlplane.fakes import offered

EVERYONE = Selector()


class Replicas:
    """What the view would compute: the endpoints of each model, edited by the test."""

    def __init__(self) -> None:
        self.by_model: dict[str, list[Endpoint]] = {}

    def compute(self, model: str, selector: Selector) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.by_model.get(model, []) if selector.matches(e.tags))


def endpoint(worker_id: str, *, load: Load | None = None, **tags: str) -> Endpoint:
    return Endpoint(worker_id, f"{worker_id}.local:7000", tags, load or Load())


async def test_a_subscriber_starts_with_the_whole_current_set_even_an_empty_one() -> None:
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1"), endpoint("w2")]
    hub = EndpointHub(replicas.compute)

    echo = await offered(hub.subscribe("echo", EVERYONE))
    bert = await offered(hub.subscribe("bert", EVERYONE))

    assert echo is not None and echo.endpoints == (endpoint("w1"), endpoint("w2"))
    assert bert is not None and bert.endpoints == ()
    assert hub.subscribers == 2


async def test_a_membership_change_is_the_whole_new_set_with_the_next_version() -> None:
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1")]
    hub = EndpointHub(replicas.compute)
    subscription = hub.subscribe("echo", EVERYONE)
    first = await offered(subscription)
    assert first is not None

    replicas.by_model["echo"] = [endpoint("w1"), endpoint("w2")]
    hub.recompute({"echo"})

    assert await offered(subscription) == EndpointSet(
        "echo", first.version + 1, (endpoint("w1"), endpoint("w2"))
    )


async def test_recomputing_an_unchanged_set_offers_nothing_and_keeps_the_version() -> None:
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1")]
    hub = EndpointHub(replicas.compute)
    subscription = hub.subscribe("echo", EVERYONE)
    await offered(subscription)
    version = subscription.version

    hub.recompute({"echo"})
    hub.recompute(None)
    replicas.by_model["echo"] = [endpoint("w1", load=Load(in_flight=9))]  # load only
    hub.recompute({"echo"})

    assert await offered(subscription) is None
    assert subscription.version == version


async def test_a_tag_change_is_a_membership_change() -> None:
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1", zone="a")]
    hub = EndpointHub(replicas.compute)
    subscription = hub.subscribe("echo", EVERYONE)
    await offered(subscription)
    version = subscription.version

    replicas.by_model["echo"] = [endpoint("w1", zone="b")]
    hub.recompute({"echo"})

    changed = await offered(subscription)
    assert changed is not None and changed.version == version + 1
    assert changed.endpoints == (endpoint("w1", zone="b"),)


async def test_only_the_subscriptions_of_the_recomputed_models_are_offered_a_set() -> None:
    replicas = Replicas()
    hub = EndpointHub(replicas.compute)
    echo = hub.subscribe("echo", EVERYONE)
    bert = hub.subscribe("bert", EVERYONE)
    await offered(echo), await offered(bert)

    replicas.by_model["echo"] = [endpoint("w1")]
    replicas.by_model["bert"] = [endpoint("w1")]
    hub.recompute({"echo"})

    assert await offered(echo) is not None
    assert await offered(bert) is None


async def test_each_selector_gets_its_own_narrowed_set() -> None:
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1", device="cuda"), endpoint("w2", device="cpu")]
    hub = EndpointHub(replicas.compute)

    gpu = await offered(hub.subscribe("echo", parse_selector("device=cuda")))

    assert gpu is not None and gpu.endpoints == (endpoint("w1", device="cuda"),)


async def test_a_slow_subscriber_gets_only_the_latest_set() -> None:
    replicas = Replicas()
    hub = EndpointHub(replicas.compute)
    subscription = hub.subscribe("echo", EVERYONE)  # offered the empty set, never read

    replicas.by_model["echo"] = [endpoint("w1")]
    hub.recompute({"echo"})
    replicas.by_model["echo"] = [endpoint("w1"), endpoint("w2")]
    hub.recompute({"echo"})

    latest = await offered(subscription)
    assert latest is not None and latest.endpoints == (endpoint("w1"), endpoint("w2"))
    assert latest.version == subscription.version
    assert await offered(subscription) is None  # the stale sets were skipped, not queued


async def test_an_unsubscribed_stream_is_offered_nothing_more() -> None:
    replicas = Replicas()
    hub = EndpointHub(replicas.compute)
    subscription = hub.subscribe("echo", EVERYONE)
    await offered(subscription)

    hub.unsubscribe(subscription)
    replicas.by_model["echo"] = [endpoint("w1")]
    hub.recompute(None)
    hub.refresh()

    assert await offered(subscription) is None
    assert hub.subscribers == 0


async def test_every_refresh_period_each_set_is_offered_again_with_fresh_load() -> None:
    clock = FakeClock()
    replicas = Replicas()
    replicas.by_model["echo"] = [endpoint("w1")]
    hub = EndpointHub(replicas.compute, clock=clock)
    subscription = hub.subscribe("echo", EVERYONE)
    await offered(subscription)
    version = subscription.version
    refreshing = asyncio.ensure_future(hub.refresh_every(1.0))
    try:
        await clock.advance(0)  # the refresh task starts its first wait
        replicas.by_model["echo"] = [endpoint("w1", load=Load(in_flight=3))]

        await clock.advance(0.5)
        assert await offered(subscription) is None
        await clock.advance(0.5)
        assert await offered(subscription) == EndpointSet(
            "echo", version, (endpoint("w1", load=Load(in_flight=3)),)
        )
        await clock.advance(1.0)
        assert await offered(subscription) is not None  # and again, every period
    finally:
        await cancel_and_wait(refreshing)
