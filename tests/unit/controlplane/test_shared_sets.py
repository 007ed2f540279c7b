"""The cost of a change: each (model, selector) set is computed once per change and shared by
its subscribers, only the changed model's sets are recomputed, and a burst of reconciles is
one recompute and one push."""

from __future__ import annotations

from controlplane.hub import EndpointHub
from controlplane.reconciler import Reconciler
from modelyard.endpoints import Endpoint, EndpointSet, Load
from modelyard.selectors import Selector, parse_selector
from tests.unit.controlplane.cluster import KEYS, Cluster
from tests.unit.controlplane.fakes import offered, settle

EVERYONE = Selector()


class Counted:
    """A cluster whose hub records every set it computes."""

    def __init__(self) -> None:
        self.cluster = Cluster()
        self.computed: list[tuple[str, Selector]] = []
        self.hub = EndpointHub(self._compute)
        self.reconciler = Reconciler(
            view=self.cluster.view,
            store=self.cluster.store,
            keys=KEYS,
            probers=self.cluster.probers,
            loads=self.cluster.feeds,
            hub=self.hub,
            is_leader=lambda: True,
        )

    def _compute(self, model: str, selector: Selector) -> tuple[Endpoint, ...]:
        self.computed.append((model, selector))
        return self.cluster.view.endpoints(model, selector)

    async def reconcile(self, *worker_ids: str) -> None:
        for worker_id in worker_ids:
            await self.reconciler.reconcile(worker_id)
        await settle()

    def computed_since(self, mark: int) -> list[tuple[str, Selector]]:
        return self.computed[mark:]


async def test_a_change_to_one_models_worker_recomputes_only_that_models_sets() -> None:
    c = Counted()
    c.cluster.register("e1", "echo")
    c.cluster.register("b1", "bert")
    await c.reconcile("e1", "b1")
    echo, bert = c.hub.subscribe("echo", EVERYONE), c.hub.subscribe("bert", EVERYONE)
    await offered(echo), await offered(bert)
    mark = len(c.computed)

    c.cluster.drain("e1")
    await c.reconcile("e1")

    assert c.computed_since(mark) == [("echo", EVERYONE)]
    assert await offered(bert) is None
    changed = await offered(echo)
    assert changed is not None and changed.endpoints == ()


async def test_subscribers_of_one_model_and_selector_share_one_set_and_one_message() -> None:
    c = Counted()
    c.cluster.register("e1", "echo", tags={"zone": "a"})
    await c.reconcile("e1")
    same = [c.hub.subscribe("echo", EVERYONE) for _ in range(3)]
    zoned = c.hub.subscribe("echo", parse_selector("zone=b"))
    for subscription in [*same, zoned]:
        await offered(subscription)
    mark = len(c.computed)

    c.cluster.register("e2", "echo", tags={"zone": "a"})
    await c.reconcile("e2")

    # one computation per (model, selector), not per subscriber
    assert sorted(c.computed_since(mark), key=str) == [
        ("echo", EVERYONE),
        ("echo", parse_selector("zone=b")),
    ]
    sets = [await offered(s) for s in same]
    assert sets[0] is not None and [e.worker_id for e in sets[0].endpoints] == ["e1", "e2"]
    assert all(s is sets[0] for s in sets)
    assert await offered(zoned) is None  # its set did not change
    assert c.hub.subscribers == 4 and c.hub.groups == 2

    encoded: list[EndpointSet] = []

    def encode(endpoint_set: EndpointSet) -> str:
        encoded.append(endpoint_set)
        return f"v{endpoint_set.version}"

    c.cluster.drain("e2")
    await c.reconcile("e2")
    messages = [await s.next_encoded(encode) for s in same]
    assert len(encoded) == 1 and messages == [f"v{encoded[0].version}"] * 3


async def test_a_burst_of_reconciles_is_one_recompute_and_one_push() -> None:
    c = Counted()
    await c.reconcile()
    subscription = c.hub.subscribe("echo", EVERYONE)
    first = await offered(subscription)
    assert first is not None and first.endpoints == ()
    mark = len(c.computed)

    for n in range(5):  # as after an informer's listing: five keys reconciled in a row
        c.cluster.register(f"w{n}", "echo")
        await c.reconciler.reconcile(f"w{n}")
    await settle()

    assert c.computed_since(mark) == [("echo", EVERYONE)]
    pushed = await offered(subscription)
    assert pushed is not None
    assert [e.worker_id for e in pushed.endpoints] == ["w0", "w1", "w2", "w3", "w4"]
    assert pushed.version == first.version + 1
    assert await offered(subscription) is None


async def test_versions_increase_with_membership_and_stay_when_only_load_changes() -> None:
    c = Counted()
    registration = c.cluster.register("w1", "echo")
    c.cluster.register("w2", "echo")
    await c.reconcile("w1", "w2")
    subscription = c.hub.subscribe("echo", EVERYONE)
    first = await offered(subscription)
    assert first is not None

    c.cluster.loads["w1"] = Load(in_flight=7)
    c.cluster.record_health("w1", registration, serving={"echo": True})
    await c.reconcile("w1")
    assert await offered(subscription) is None
    assert subscription.version == first.version

    c.cluster.drain("w2")
    await c.reconcile("w2")
    drained = await offered(subscription)
    c.cluster.undrain("w2")
    await c.reconcile("w2")
    back = await offered(subscription)
    assert drained is not None and back is not None
    assert first.version < drained.version < back.version
    assert [e.worker_id for e in back.endpoints] == ["w1", "w2"]


async def test_a_worker_that_changes_models_leaves_the_old_models_set() -> None:
    c = Counted()
    c.cluster.register("w1", "echo")
    await c.reconcile("w1")
    echo, bert = c.hub.subscribe("echo", EVERYONE), c.hub.subscribe("bert", EVERYONE)
    await offered(echo), await offered(bert)

    c.cluster.update("w1", "bert")
    await c.reconcile("w1")

    left, joined = await offered(echo), await offered(bert)
    assert left is not None and left.endpoints == ()
    assert joined is not None and [e.worker_id for e in joined.endpoints] == ["w1"]
