"""Hedged calls (modelyard.hedging) on a fake clock, and the graph node's `hedge_after`
from file to proto and back, through the builder, validation and the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from composer.engine import run_graph
from composer.spec import graph_from_dict, graph_to_dict
from composer.validation import validate
from modelyard.graph_builder import GraphBuilder
from modelyard.hedging import hedged
from modelyard.times import duration, seconds
from modelyard.v1 import graph_pb2 as g
from tests.support.clock import FakeClock
from tests.unit.test_engine import FakeInvoker, echo, graph


class Attempts:
    """Attempts the test answers or fails one by one, in the order they started."""

    def __init__(self) -> None:
        self.started: list[asyncio.Future[str]] = []
        self.cancelled = 0

    def attempt(self) -> Callable[[], Awaitable[str]]:
        async def one() -> str:
            outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.started.append(outcome)
            try:
                return await outcome
            except asyncio.CancelledError:
                self.cancelled += 1
                raise

        return one


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_answer_before_the_delay_needs_no_hedge() -> None:
    clock, attempts = FakeClock(), Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    attempts.started[0].set_result("first")
    assert await call == "first"
    await clock.advance(1.0)
    assert len(attempts.started) == 1 and clock.sleepers == 0


async def test_after_the_delay_a_second_attempt_races_and_the_first_answer_wins() -> None:
    clock, attempts = FakeClock(), Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    await clock.advance(0.49)
    assert len(attempts.started) == 1
    await clock.advance(0.01)
    assert len(attempts.started) == 2
    attempts.started[1].set_result("hedge")
    assert await call == "hedge"
    assert attempts.cancelled == 1  # the slow one is called off

    attempts = Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    await clock.advance(0.5)
    attempts.started[0].set_result("first, late")  # the original may still win
    assert await call == "first, late"
    assert attempts.cancelled == 1


async def test_no_hedge_without_someone_to_take_it() -> None:
    clock, attempts = FakeClock(), Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: False))
    await settle()
    await clock.advance(5.0)
    assert len(attempts.started) == 1 and not call.done()
    attempts.started[0].set_result("first")
    assert await call == "first"


async def test_a_failure_waits_for_the_other_attempt_and_both_failing_raise_the_last() -> None:
    clock, attempts = FakeClock(), Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    await clock.advance(0.5)
    attempts.started[0].set_exception(RuntimeError("first failed"))
    await settle()
    assert not call.done()
    attempts.started[1].set_exception(RuntimeError("hedge failed"))
    with pytest.raises(RuntimeError, match="hedge failed"):
        await call

    attempts = Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    await clock.advance(0.5)
    attempts.started[1].set_exception(RuntimeError("hedge failed"))
    await settle()
    attempts.started[0].set_result("first")
    assert await call == "first"


async def test_cancelling_the_caller_cancels_both_attempts() -> None:
    clock, attempts = FakeClock(), Attempts()
    call = asyncio.create_task(hedged(clock, 0.5, attempts.attempt(), may_hedge=lambda: True))
    await settle()
    await clock.advance(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert attempts.cancelled == 2


def test_hedge_after_goes_from_the_file_form_to_the_proto_and_back() -> None:
    data = {
        "name": "h",
        "inputs": {"text": "string"},
        "nodes": [
            {"name": "a", "model": "m", "inputs": {"text": "inputs.text"}, "hedge_after": 0.25}
        ],
        "outputs": {"a": "a"},
    }
    graph_proto = graph_from_dict(data)
    assert seconds(graph_proto.nodes[0].hedge_after) == 0.25
    assert graph_to_dict(graph_proto)["nodes"][0]["hedge_after"] == 0.25
    data["nodes"][0]["hedge_after"] = "1.5s"  # type: ignore[index]
    assert seconds(graph_from_dict(data).nodes[0].hedge_after) == 1.5
    built = GraphBuilder("h")
    built.model("a", "m", text=built.input("text"), hedge_after=0.25)
    built.output("a", "a")
    assert built.build().nodes[0].hedge_after == graph_proto.nodes[0].hedge_after
    assert (
        "hedge_after"
        not in graph_to_dict(
            graph_from_dict(
                {**data, "nodes": [{"name": "a", "model": "m", "inputs": {"text": "inputs.text"}}]}
            )
        )["nodes"][0]
    )


def test_a_negative_hedge_after_is_refused() -> None:
    spec = graph(
        g.Node(name="a", model=g.ModelCall(model="m", inputs={"text": "inputs.text"})),
        outputs={"a": "a"},
    )
    spec.nodes[0].hedge_after.CopyFrom(duration(-1))
    assert validate(spec).errors == ["node 'a': hedge_after must be 0 or more, got -1s"]


async def test_the_engine_hands_the_nodes_hedge_after_to_the_invoker() -> None:
    invoker = FakeInvoker(models={"m": echo})
    hedging = g.Node(name="a", model=g.ModelCall(model="m", inputs={"text": "inputs.text"}))
    hedging.hedge_after.CopyFrom(duration(0.25))
    plain = g.Node(name="b", model=g.ModelCall(model="m", inputs={"text": "inputs.text"}))
    await run_graph(graph(hedging, plain, outputs={"a": "a", "b": "b"}), {"text": "hi"}, invoker)
    assert sorted((c.hedge_after for c in invoker.calls), key=str) == [0.25, None]
