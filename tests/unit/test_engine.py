"""The graph engine (composer.engine) against a scripted, in-process invoker."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from composer import engine
from composer.conditions import holds
from composer.engine import (
    Event,
    Invoker,
    NodeChunk,
    NodeFinished,
    NodeStarted,
    RunResult,
    run_graph,
)
from modelyard.backoff import Backoff
from modelyard.client import Prediction, StreamEvent
from modelyard.enum_names import AGGREGATE_METHODS
from modelyard.errors import DeadlineExceeded, InvalidArgument, ModelyardError, Unavailable
from modelyard.routed_client import RoutedClient
from modelyard.times import duration
from modelyard.v1 import graph_pb2 as g
from modelyard.v1 import value_pb2 as v
from modelyard.values import to_value
from tests.support.clock import FakeClock

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]
Streamer = Callable[[dict[str, Any]], AsyncIterator[StreamEvent]]
SEGMENT, CHUNK = g.STREAM_MODE_SEGMENT, g.STREAM_MODE_CHUNK
#: Seconds before a run that should finish at once fails as deadlocked (a busy host is slow,
#: not deadlocked).
DEADLOCK_GUARD = 10


def _routed_client_is_an_invoker(client: RoutedClient) -> Invoker:
    return client  # checked by mypy: the real client plugs straight in


@dataclass(frozen=True, slots=True)
class ServedPrediction(Prediction):
    worker: str = ""


@dataclass
class Call:
    model: str
    inputs: dict[str, Any]
    parameters: dict[str, Any]
    selector: str
    timeout: float | None
    hedge_after: float | None = None


@dataclass
class FakeInvoker:
    """Models are async handlers (inputs, parameters) -> outputs; streams are async
    generators of StreamEvents. Records calls, cancellations and peak concurrency."""

    models: dict[str, Handler] = field(default_factory=dict)
    streams: dict[str, Streamer] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    active: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until_active(self, model: str, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.active[model] >= count)

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
        hedge_after: float | None = None,
    ) -> Prediction:
        call = Call(model, dict(inputs), dict(parameters), selector, timeout, hedge_after)
        self.calls.append(call)
        self.active[model] += 1
        self.peak[model] = max(self.peak[model], self.active[model])
        async with self.changed:
            self.changed.notify_all()
        try:
            outputs = await self.models[model](dict(inputs), dict(parameters))
        except asyncio.CancelledError:
            self.cancelled.append(model)
            raise
        except ModelyardError as error:
            error.worker = f"w-{model}"  # as the routed client names who answered
            raise
        finally:
            self.active[model] -= 1
        return ServedPrediction(model, "1", outputs, worker=f"w-{model}")

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
    ) -> AsyncIterator[StreamEvent]:
        self.calls.append(Call(model, dict(inputs), dict(parameters), selector, timeout))
        return self.streams[model](dict(inputs))


async def echo(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    return {**inputs, **parameters}


async def forever(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def fails(error: ModelyardError, times: int | None = None) -> Handler:
    """Raises `error` (the first `times` calls only, when given), else echoes."""
    count = 0

    async def handler(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if times is None or count <= times:
            raise error
        return inputs

    return handler


def text_stream(pieces: list[str], gate: asyncio.Event | None = None, at: int = -1) -> Streamer:
    """Streams {"text": piece} chunks, then the whole text; waits for `gate` before chunk `at`."""
    closed: list[bool] = []

    async def stream(inputs: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        try:
            for index, piece in enumerate(pieces):
                if gate is not None and index == at:
                    await gate.wait()
                yield StreamEvent(index, {"text": piece}, final=False)
            yield StreamEvent(len(pieces), {"text": "".join(pieces)}, final=True)
        finally:
            closed.append(True)

    stream.closed = closed  # type: ignore[attr-defined]
    return stream


def call(model: str, **inputs: str) -> g.ModelCall:
    return g.ModelCall(model=model, inputs=inputs)


def node(name: str, model: str, **inputs: str) -> g.Node:
    return g.Node(name=name, model=call(model, **inputs))


def graph(
    *nodes: g.Node, outputs: dict[str, str], inputs: list[g.GraphInput] | None = None
) -> g.Graph:
    default = [g.GraphInput(name="text", kind=v.VALUE_KIND_STRING, required=True)]
    return g.Graph(
        name="test", inputs=default if inputs is None else inputs, nodes=nodes, outputs=outputs
    )


async def run(
    spec: g.Graph, invoker: FakeInvoker, inputs: Mapping[str, Any] | None = None, **kwargs: Any
) -> tuple[RunResult, list[Event]]:
    events: list[Event] = []
    given = {"text": "hi"} if inputs is None else inputs
    result = await run_graph(spec, given, invoker, on_event=events.append, **kwargs)
    return result, events


def only_this_task_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


async def until(condition: Callable[[], bool]) -> None:
    """Lets other tasks run until `condition` holds: a bounded number of loop turns, no time."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "RETRY_BACKOFF", Backoff(initial=1e-6, cap=1e-6))


# --- scheduling -------------------------------------------------------------------------


async def test_independent_nodes_run_concurrently() -> None:
    both = asyncio.Event()
    started: list[str] = []

    async def meet(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        started.append(inputs["text"])
        if len(started) == 2:
            both.set()
        await both.wait()  # deadlocks (and times out) unless both calls are in flight at once
        return {"seen": inputs["text"]}

    invoker = FakeInvoker(models={"meet": meet})
    spec = graph(
        node("a", "meet", text="inputs.text"),
        node("b", "meet", text="inputs.text"),
        outputs={"a": "a.seen", "b": "b.seen"},
    )
    async with asyncio.timeout(DEADLOCK_GUARD):
        result, events = await run(spec, invoker)
    assert result.outputs == {"a": "hi", "b": "hi"}
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["NodeStarted", "NodeStarted", "NodeFinished", "NodeFinished"]


async def test_dependent_nodes_run_in_order_and_unused_nodes_still_run() -> None:
    async def shout(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        return {"text": inputs["text"].upper() + parameters.get("suffix", "")}

    invoker = FakeInvoker(models={"shout": shout, "echo": echo})
    upper = g.Node(
        name="upper",
        model=g.ModelCall(
            model="shout",
            inputs={"text": "inputs.text"},
            parameters={"suffix": to_value("!")},
            selector="device=cpu",
        ),
    )
    spec = graph(
        node("final", "echo", text="upper.text", raw="inputs.text"),
        upper,
        node("unused", "echo", x="inputs.text"),
        outputs={"out": "final.text", "all": "final"},
    )
    result, events = await run(spec, invoker)
    assert result.outputs == {"out": "HI!", "all": {"text": "HI!", "raw": "hi"}}
    assert [c.model for c in invoker.calls][:2] == ["shout", "echo"]
    assert invoker.calls[0].selector == "device=cpu"
    assert {c.inputs.get("x") for c in invoker.calls} >= {"hi"}  # "unused" ran too
    finished = [e.node for e in events if isinstance(e, NodeFinished)]
    assert finished.index("upper") < finished.index("final")
    assert [t.node for t in result.timeline] == finished


async def test_timeline_times_workers_and_status() -> None:
    clock = FakeClock()

    def takes(seconds: float) -> Handler:
        async def handler(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
            await clock.advance(seconds)
            return inputs

        return handler

    invoker = FakeInvoker(models={"two": takes(2.0), "three": takes(3.0)})
    spec = graph(
        node("a", "two", text="inputs.text"),
        node("b", "three", text="a.text"),
        outputs={"b": "b.text"},
    )
    result, _ = await run(spec, invoker, clock=clock)
    assert result.timeline == [
        NodeFinished("a", 0.0, 2.0, ("w-two",), "ok", ""),
        NodeFinished("b", 2.0, 3.0, ("w-three",), "ok", ""),
    ]


def failing_graph(failing: str) -> tuple[g.Graph, dict[str, Any]]:
    """A graph whose node `failing` calls model "bert": a model node "b" after another, or
    a map node "each"; and its inputs."""
    if failing == "b":
        nodes = (node("a", "echo", text="inputs.text"), node("b", "bert", text="a.text"))
        return graph(*nodes, outputs={"b": "b"}), {"text": "hi"}
    mapped = g.Node(name="each", map=g.MapNode(over="inputs.texts", call=call("bert", t="item")))
    texts = [g.GraphInput(name="texts", kind=v.VALUE_KIND_LIST, required=True)]
    return graph(mapped, outputs={"r": "each.results"}, inputs=texts), {"texts": ["x"]}


@pytest.mark.parametrize("failing", ["b", "each"])
async def test_a_failed_nodes_timeline_entry_names_the_worker_that_failed_it(
    failing: str,
) -> None:
    invoker = FakeInvoker(models={"echo": echo, "bert": fails(InvalidArgument("too long"))})
    spec, inputs = failing_graph(failing)
    events: list[Event] = []
    with pytest.raises(InvalidArgument):
        await run_graph(spec, inputs, invoker, on_event=events.append)
    finished = [e for e in events if isinstance(e, NodeFinished) and e.node == failing]
    assert [(e.status, e.workers) for e in finished] == [("failed", ("w-bert",))]


# --- map, switch, aggregate -------------------------------------------------------------


async def release_latest_first(
    held: dict[int, asyncio.Event], finished: list[int], *, limit: int, total: int
) -> None:
    """Each time `limit` calls are in flight (or all that are left), lets the latest of them
    finish: later calls finish before earlier ones, whatever the host's speed."""
    while len(finished) < total:

        def in_flight() -> list[int]:
            return [index for index in held if index not in finished]

        await until(lambda: len(in_flight()) >= min(limit, total - len(finished)))
        latest = max(in_flight())
        held[latest].set()
        await until(lambda: latest in finished)  # noqa: B023 (awaited here, in this turn)


async def test_map_calls_each_element_within_the_concurrency_bound_in_order() -> None:
    held: dict[int, asyncio.Event] = {}
    finished: list[int] = []

    async def slow(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        held[inputs["n"]] = release = asyncio.Event()
        await release.wait()
        finished.append(inputs["n"])
        return {"double": inputs["n"] * 2, "tag": inputs["tag"]}

    invoker = FakeInvoker(models={"slow": slow})
    mapped = g.Node(
        name="m",
        map=g.MapNode(
            over="inputs.items", concurrency=3, call=call("slow", n="item.n", tag="inputs.tag")
        ),
    )
    inputs = [
        g.GraphInput(name="items", kind=v.VALUE_KIND_LIST, required=True),
        g.GraphInput(name="tag", kind=v.VALUE_KIND_STRING, default=to_value("t")),
    ]
    spec = graph(mapped, outputs={"r": "m.results"}, inputs=inputs)
    running = asyncio.create_task(run(spec, invoker, {"items": [{"n": i} for i in range(10)]}))
    await release_latest_first(held, finished, limit=3, total=10)
    result, _ = await running
    assert finished == [2, 3, 4, 5, 6, 7, 8, 9, 1, 0]  # later elements finished first
    assert result.outputs["r"] == [{"double": 2 * i, "tag": "t"} for i in range(10)]
    assert invoker.peak["slow"] == 3


async def test_map_default_concurrency_and_errors_name_the_element() -> None:
    gate = asyncio.Event()

    async def wait(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        if invoker.active["wait"] == engine.MAP_CONCURRENCY:
            gate.set()
        await gate.wait()
        if inputs["x"] == 11:
            raise InvalidArgument("input 'x' is unlucky")
        return inputs

    invoker = FakeInvoker(models={"wait": wait})
    mapped = g.Node(name="m", map=g.MapNode(over="inputs.xs", call=call("wait", x="item")))
    spec = graph(
        mapped, outputs={}, inputs=[g.GraphInput(name="xs", kind=v.VALUE_KIND_LIST, required=True)]
    )
    with pytest.raises(InvalidArgument, match=r"^node 'm': element 11: input 'x' is unlucky$"):
        await run(spec, invoker, {"xs": list(range(20))})
    assert invoker.peak["wait"] == engine.MAP_CONCURRENCY
    assert only_this_task_left()


@pytest.mark.parametrize(
    ("score", "label", "branch", "model"),
    [(0.9, "x", 0, "high"), (0.5, "b", 1, "ab"), (0.5, "z", -1, "low")],
)
async def test_switch_takes_the_first_case_that_holds(
    score: float, label: str, branch: int, model: str
) -> None:
    invoker = FakeInvoker(models={"high": echo, "ab": echo, "low": echo})
    cases = [
        g.SwitchCase(
            when=g.Condition(value="inputs.score", op=g.CONDITION_OP_GT, operand=to_value(0.8)),
            call=g.ModelCall(model="high", inputs={"label": "inputs.label"}),
        ),
        g.SwitchCase(
            when=g.Condition(
                value="inputs.label", op=g.CONDITION_OP_IN, operand=to_value(["a", "b"])
            ),
            call=g.ModelCall(model="ab", inputs={"label": "inputs.label"}),
        ),
    ]
    switch = g.Node(
        name="s", switch=g.SwitchNode(cases=cases, default=call("low", v="inputs.label"))
    )
    inputs = [
        g.GraphInput(name="score", kind=v.VALUE_KIND_FLOAT, required=True),
        g.GraphInput(name="label", kind=v.VALUE_KIND_STRING, required=True),
    ]
    result, _ = await run(
        graph(switch, outputs={"s": "s"}, inputs=inputs), invoker, {"score": score, "label": label}
    )
    assert result.outputs["s"]["branch"] == branch
    assert [c.model for c in invoker.calls] == [model]


async def test_switch_without_match_or_default_yields_null() -> None:
    when = g.Condition(value="inputs.text", op=g.CONDITION_OP_EQ, operand=to_value("other"))
    switch = g.Node(name="s", switch=g.SwitchNode(cases=[g.SwitchCase(when=when, call=call("x"))]))
    spec = graph(switch, node("after", "echo", v="s.branch"), outputs={"s": "s", "v": "after.v"})
    result, _ = await run(spec, FakeInvoker(models={"echo": echo}))
    assert result.outputs == {"s": None, "v": None}


@pytest.mark.parametrize(
    ("op", "value", "operand", "expected"),
    [
        ("==", 1, 1, True),
        ("!=", "a", "a", False),
        (">=", 2, 2.0, True),
        ("<", 1, 2, True),
        ("<=", 3, 2, False),
        ("in", "a", ["a"], True),
        ("not in", 3, [1, 2], True),
        (">", None, 1, False),
    ],
)
def test_conditions(op: str, value: Any, operand: Any, expected: bool) -> None:
    assert holds(op, value, operand) is expected


def test_conditions_that_cannot_be_evaluated() -> None:
    with pytest.raises(InvalidArgument, match="cannot evaluate str 'a' > int 1"):
        holds(">", "a", 1)
    with pytest.raises(InvalidArgument, match="operand of 'in' must be a list"):
        holds("in", 1, 5)
    with pytest.raises(InvalidArgument, match="unknown operator '=~'"):
        holds("=~", 1, 1)


async def test_aggregate_nodes() -> None:
    async def label(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        return {"label": inputs["text"], "score": len(inputs["text"])}

    invoker = FakeInvoker(models={"label": label})
    voters = [node(f"v{i}", "label", text=f"inputs.t{i}") for i in range(3)]
    refs = ["v0", "v1.label", "v2"]

    def agg(name: str, method: str, values: list[str], weights: tuple[float, ...] = ()) -> g.Node:
        return g.Node(
            name=name,
            aggregate=g.AggregateNode(
                method=AGGREGATE_METHODS.value(method), values=values, weights=weights
            ),
        )

    spec = graph(
        *voters,
        agg("vote", "majority_vote", refs),
        agg("avg", "weighted_average", ["v0", "v1.score", "v2"], (1.0, 1.0, 2.0)),
        agg("cat", "concat", ["v0.label", "v2.label"]),
        agg("all", "collect", refs[:2]),
        outputs={k: k for k in ("vote", "avg", "cat", "all")},
        inputs=[g.GraphInput(name=f"t{i}", kind=v.VALUE_KIND_STRING) for i in range(3)],
    )
    result, _ = await run(spec, invoker, {"t0": "aa", "t1": "b", "t2": "aa"})
    assert result.outputs == {
        "vote": {"label": "aa", "votes": {"aa": 2, "b": 1}},
        "avg": {"value": pytest.approx((2 + 1 + 4) / 4)},
        "cat": {"value": "aa\naa"},
        "all": {"value": {"v0": {"label": "aa", "score": 2}, "v1.label": "b"}},
    }


# --- failures -----------------------------------------------------------------------------


async def test_optional_failure_yields_null_and_a_skipped_event() -> None:
    invoker = FakeInvoker(
        models={"flaky": fails(Unavailable("model 'flaky' is loading")), "echo": echo}
    )
    extra = g.Node(name="extra", model=call("flaky", text="inputs.text"), optional=True)
    spec = graph(
        extra,
        node("after", "echo", hint="extra.label", text="inputs.text"),
        outputs={"extra": "extra", "hint": "after.hint"},
    )
    result, events = await run(spec, invoker)
    assert result.outputs == {"extra": None, "hint": None}
    skipped = next(e for e in events if isinstance(e, NodeFinished) and e.node == "extra")
    assert (skipped.status, skipped.reason) == ("skipped", "model 'flaky' is loading")


async def test_failure_cancels_siblings_and_names_the_node_with_its_code() -> None:
    async def bad(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        await invoker.until_active("slow", 2)  # let both siblings get going first
        raise InvalidArgument("model 'bert': input 'text' must be a string, got an integer")

    invoker = FakeInvoker(models={"bert": bad, "slow": forever, "echo": echo})
    spec = graph(
        node("score", "bert", text="inputs.text"),
        node("s1", "slow", x="inputs.text"),
        node("s2", "slow", x="inputs.text"),
        node("later", "echo", x="score"),
        outputs={},
    )
    with pytest.raises(InvalidArgument) as caught:
        await run(spec, invoker)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == (
        "node 'score': model 'bert': input 'text' must be a string, got an integer"
    )
    assert invoker.cancelled == ["slow", "slow"]
    assert "echo" not in [c.model for c in invoker.calls]
    assert only_this_task_left()


async def test_missing_field_is_invalid_argument_naming_the_node() -> None:
    spec = graph(node("a", "echo", text="inputs.text"), node("b", "echo", t="a.nope"), outputs={})
    with pytest.raises(InvalidArgument, match=r"^node 'b': input 't': a.nope: no field 'nope'"):
        await run(spec, FakeInvoker(models={"echo": echo}))


@pytest.mark.parametrize(("retries", "ok"), [(2, True), (1, False)])
async def test_retries_only_unavailable(retries: int, ok: bool) -> None:
    invoker = FakeInvoker(models={"m": fails(Unavailable("no replica"), times=2)})
    spec = graph(
        g.Node(name="n", model=call("m", text="inputs.text"), retries=retries),
        outputs={"t": "n.text"},
    )
    if ok:
        assert (await run(spec, invoker))[0].outputs == {"t": "hi"}
    else:
        with pytest.raises(Unavailable, match=r"^node 'n': no replica$"):
            await run(spec, invoker)
    assert len(invoker.calls) == 3 if ok else 2
    invoker = FakeInvoker(models={"m": fails(InvalidArgument("bad"), times=1)})
    with pytest.raises(InvalidArgument):
        await run(spec, invoker)
    assert len(invoker.calls) == 1


async def test_deadline_cancels_everything() -> None:
    # on the default (system) clock, with room for a busy host to start the run in time;
    # the next test pins the arithmetic on a fake clock
    invoker = FakeInvoker(models={"slow": forever})
    spec = graph(node("slow", "slow", text="inputs.text"), outputs={})
    with pytest.raises(DeadlineExceeded, match=r"still running: slow"):
        await run(spec, invoker, deadline=time.monotonic() + 0.5)
    assert invoker.cancelled == ["slow"]
    timeout = invoker.calls[0].timeout
    assert timeout is not None and 0 < timeout <= 0.5
    assert only_this_task_left()
    with pytest.raises(DeadlineExceeded, match="before graph 'test' started"):
        await run(spec, invoker, deadline=time.monotonic() - 1)


async def test_the_deadline_runs_on_the_injected_clock() -> None:
    clock = FakeClock()
    invoker = FakeInvoker(models={"slow": forever})
    spec = graph(node("slow", "slow", text="inputs.text"), outputs={})
    # an hour on the fake clock: on the loop's clock this run would outlast the test
    task = asyncio.create_task(
        run_graph(spec, {"text": "hi"}, invoker, deadline=clock.now() + 3600, clock=clock)
    )
    await invoker.until_active("slow", 1)
    assert invoker.calls[0].timeout == 3600  # the time left, read from the injected clock
    await clock.advance(3599)
    assert not task.done()
    await clock.advance(1)
    await until(task.done)
    with pytest.raises(DeadlineExceeded, match=r"still running: slow"):
        task.result()
    assert invoker.cancelled == ["slow"]
    assert only_this_task_left()
    with pytest.raises(DeadlineExceeded, match="before graph 'test' started"):
        await run_graph(spec, {"text": "hi"}, invoker, deadline=clock.now(), clock=clock)


async def test_node_timeouts_and_retry_backoff_run_on_the_injected_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "RETRY_BACKOFF", Backoff(initial=1.0, cap=1.0, jitter=0.0))
    clock = FakeClock()
    invoker = FakeInvoker(models={"flaky": fails(Unavailable("no replica"), times=1)})
    spec = graph(
        g.Node(name="n", model=call("flaky", text="inputs.text"), retries=1),
        outputs={"t": "n.text"},
    )
    task = asyncio.create_task(run_graph(spec, {"text": "hi"}, invoker, clock=clock))
    await until(lambda: clock.sleepers == 1)  # the backoff after the first failure
    await clock.advance(0.999)
    assert len(invoker.calls) == 1
    await clock.advance(0.001)
    await until(task.done)
    assert task.result().outputs == {"t": "hi"}
    assert len(invoker.calls) == 2

    slow = g.Node(name="slow", model=call("slow"), timeout=duration(2))
    task = asyncio.create_task(
        run_graph(
            graph(slow, outputs={}),
            {"text": "hi"},
            FakeInvoker(models={"slow": forever}),
            clock=clock,
        )
    )
    await until(lambda: clock.sleepers == 1)  # the node's timeout
    await clock.advance(2)
    await until(task.done)
    with pytest.raises(
        DeadlineExceeded, match=r"^node 'slow': model 'slow' took over the node's 2s"
    ):
        task.result()


async def test_node_timeout_bounds_each_attempt() -> None:
    invoker = FakeInvoker(models={"slow": forever})
    slow = g.Node(name="slow", model=call("slow"), timeout=duration(0.02))
    with pytest.raises(DeadlineExceeded, match=r"^node 'slow': model 'slow' took over .*0.02s"):
        await run(graph(slow, outputs={}), invoker, deadline=time.monotonic() + 5)
    assert invoker.calls[0].timeout == 0.02


async def test_client_cancellation_leaves_no_task_running() -> None:
    invoker = FakeInvoker(
        models={"slow": forever}, streams={"gen": text_stream(["a"], asyncio.Event(), 0)}
    )
    spec = graph(
        node("slow", "slow"),
        node("gen", "gen"),
        g.Node(
            name="tts", model=g.ModelCall(model="slow", inputs={"t": "gen.text"}, stream=SEGMENT)
        ),
        outputs={},
    )
    task = asyncio.create_task(run_graph(spec, {"text": "hi"}, invoker))
    await invoker.until_active("slow", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert invoker.cancelled == ["slow"]
    assert invoker.streams["gen"].closed == [True]  # type: ignore[attr-defined]
    assert only_this_task_left()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing input 'text' (string)"),
        ({"text": 3}, "input 'text' must be a string, got an integer"),
        ({"text": "a", "txet": 1}, "unknown input 'txet'; graph 'test' takes: text, n"),
    ],
)
async def test_inputs_are_checked_before_any_call(inputs: dict[str, Any], message: str) -> None:
    invoker = FakeInvoker(models={"echo": echo})
    spec = graph(
        node("a", "echo", n="inputs.n"),
        outputs={"n": "a.n"},
        inputs=[
            g.GraphInput(name="text", kind=v.VALUE_KIND_STRING, required=True),
            g.GraphInput(name="n", kind=v.VALUE_KIND_FLOAT, default=to_value(2)),
        ],
    )
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        await run(spec, invoker, inputs)
    assert invoker.calls == []
    result, _ = await run(spec, invoker, {"text": "a", "n": None})
    assert result.outputs == {"n": 2}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([node("a", "echo", x="b"), node("b", "echo", x="a")], "nodes a, b wait on each other"),
        ([node("a", "echo", x="zz.x")], "node 'a': 'zz.x' names no node"),
        ([node("a", "echo", x="inputs.nope")], "node 'a': 'inputs.nope' names no input"),
        (
            [
                node("a", "e"),
                node("b", "e"),
                g.Node(
                    name="c",
                    model=g.ModelCall(model="e", inputs={"x": "a", "y": "b"}, stream=CHUNK),
                ),
            ],
            "reference a, b",
        ),
    ],
)
async def test_malformed_graphs_fail_before_any_call(nodes: list[g.Node], message: str) -> None:
    invoker = FakeInvoker(models={"echo": echo})
    with pytest.raises(InvalidArgument, match=message):
        await run(graph(*nodes, outputs={}), invoker)
    assert invoker.calls == []


# --- streaming edges ---------------------------------------------------------------------


def consumer(name: str, model: str, mode: g.StreamMode.ValueType, **inputs: str) -> g.Node:
    return g.Node(name=name, model=g.ModelCall(model=model, inputs=inputs, stream=mode))


async def test_segment_consumer_works_while_the_upstream_is_still_generating() -> None:
    first_result = asyncio.Event()
    gen = text_stream(["Hello wor", "ld. How", " are you?", " Fine"], gate=first_result, at=2)
    invoker = FakeInvoker(models={"tts": echo, "count": echo}, streams={"gen": gen})

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, NodeChunk) and event.node == "tts":
            first_result.set()  # the upstream generates its rest only after this

    events: list[Event] = []
    spec = graph(
        node("gen", "gen", text="inputs.text"),
        consumer("tts", "tts", SEGMENT, text="gen.text", voice="inputs.text"),
        node("count", "count", full="gen.text"),
        outputs={"tts": "tts", "full": "count.full"},
    )
    async with asyncio.timeout(DEADLOCK_GUARD):
        result = await run_graph(spec, {"text": "v"}, invoker, on_event=on_event)
    segments = ["Hello world.", "How are you?", "Fine"]
    assert result.outputs["tts"] == {
        "segments": segments,
        "results": [{"text": s, "voice": "v"} for s in segments],
    }
    assert result.outputs["full"] == "Hello world. How are you? Fine"
    order = [(type(e).__name__, e.node) for e in events]
    assert order.index(("NodeChunk", "tts")) < order.index(("NodeFinished", "gen"))
    assert order.index(("NodeStarted", "count")) > order.index(("NodeFinished", "gen"))
    chunks = [e for e in events if isinstance(e, NodeChunk)]
    assert next((c.index, c.outputs) for c in chunks if c.node == "tts") == (
        0,
        {"segment": "Hello world.", "text": "Hello world.", "voice": "v"},
    )
    assert [c.outputs["text"] for c in chunks if c.node == "gen"][:2] == ["Hello wor", "ld. How"]
    assert [c.index for c in chunks if c.node == "gen"] == [0, 1, 2, 3]
    assert [c.model for c in invoker.calls].count("tts") == 3


async def test_segment_results_come_in_order_when_later_ones_finish_first() -> None:
    second_done = asyncio.Event()

    async def tts(inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        if inputs["text"] == "One.":
            await second_done.wait()
        else:
            second_done.set()
        return {"audio": inputs["text"].lower()}

    invoker = FakeInvoker(models={"tts": tts}, streams={"gen": text_stream(["One. Two. Three"])})
    spec = graph(
        node("gen", "gen"),
        consumer("tts", "tts", SEGMENT, text="gen.text"),
        outputs={"r": "tts.results"},
    )
    async with asyncio.timeout(DEADLOCK_GUARD):
        result, events = await run(spec, invoker)
    assert result.outputs["r"] == [{"audio": "one."}, {"audio": "two."}, {"audio": "three"}]
    emitted = [e.outputs["segment"] for e in events if isinstance(e, NodeChunk) and e.node == "tts"]
    assert emitted == ["One.", "Two.", "Three"]


async def test_chunk_consumer_calls_per_chunk_and_a_silent_upstream_counts_as_one_chunk() -> None:
    async def stream(inputs: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(0, {"text": "done at once"}, final=True)

    invoker = FakeInvoker(
        models={"up": echo}, streams={"gen": text_stream(["a", "b"]), "one": stream}
    )
    spec = graph(
        node("gen", "gen"),
        consumer("per", "up", CHUNK, t="gen.text"),
        node("one", "one"),
        consumer("seg", "up", SEGMENT, t="one.text"),
        outputs={"per": "per.results", "seg": "seg.segments"},
    )
    result, _ = await run(spec, invoker)
    assert result.outputs == {"per": [{"t": "a"}, {"t": "b"}], "seg": ["done at once"]}


async def test_consumer_failure_stops_the_upstream_generation() -> None:
    gen = text_stream(["Bad. ", "more"], gate=asyncio.Event(), at=1)
    invoker = FakeInvoker(
        models={"tts": fails(InvalidArgument("cannot say that"))}, streams={"gen": gen}
    )
    spec = graph(node("gen", "gen"), consumer("tts", "tts", SEGMENT, text="gen.text"), outputs={})
    with pytest.raises(InvalidArgument, match=r"^node 'tts': segment 0: cannot say that$"):
        await run(spec, invoker)
    assert gen.closed == [True]  # type: ignore[attr-defined]
    assert only_this_task_left()


async def test_a_stream_is_retried_only_before_its_first_chunk() -> None:
    attempts: list[int] = []

    async def stream(inputs: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        attempts.append(1)
        if len(attempts) == 1:
            raise Unavailable("replica gone")
        yield StreamEvent(0, {"text": "x. "}, final=False)
        raise Unavailable("replica gone mid-stream")

    invoker = FakeInvoker(models={"tts": echo}, streams={"gen": stream})
    up = g.Node(name="gen", model=call("gen"), retries=5)
    spec = graph(up, consumer("tts", "tts", SEGMENT, text="gen.text"), outputs={})
    with pytest.raises(Unavailable, match=r"^node 'gen': replica gone mid-stream$"):
        await run(spec, invoker)
    assert len(attempts) == 2


async def test_optional_upstream_failure_ends_the_consumers_stream() -> None:
    async def stream(inputs: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        yield StreamEvent(0, {"text": "Partial. sen"}, final=False)
        raise Unavailable("worker drained")

    invoker = FakeInvoker(models={"tts": echo}, streams={"gen": stream})
    up = g.Node(name="gen", model=call("gen"), optional=True)
    spec = graph(
        up,
        consumer("tts", "tts", SEGMENT, text="gen.text"),
        outputs={"s": "tts.segments", "gen": "gen"},
    )
    result, events = await run(spec, invoker)
    assert result.outputs == {"s": ["Partial.", "sen"], "gen": None}
    statuses = {e.node: e.status for e in events if isinstance(e, NodeFinished)}
    assert statuses == {"gen": "skipped", "tts": "ok"}


def test_event_types_are_plain_dataclasses() -> None:
    assert NodeStarted("a", 0.5).at == 0.5
    assert NodeChunk("a", 1, {"x": 1}).outputs == {"x": 1}
