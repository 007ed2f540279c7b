"""Runs one inference graph for one set of inputs against an injected invoker.

    result = await run_graph(graph, {"prompt": "Once"}, invoker, deadline=SYSTEM_CLOCK.now() + 5)

Scheduling follows the data: a node starts once every node it references has finished, so
independent nodes run concurrently; nodes whose outputs nobody uses run too. A failing
node fails the run and cancels everything still running, as do the deadline and the
caller's cancellation; run_graph never returns with one of its tasks still running, and a
cancelled task cancels its invoker call (so the worker stops generating).

Streaming edges: a model node with `stream` CHUNK or SEGMENT whose inputs reference a plain
model node U (one not streaming from another itself) consumes U's stream: U is called with
predict_stream, and the consumer calls its model on each chunk, or each finished segment,
while U is still generating (STREAM_CONCURRENCY calls at once), its results emitted in
order as NodeChunk events. A consumer may stream from one U only; its other inputs, and
every non-streaming reader of U, wait for final outputs as usual. A U that sends no chunks
before its result hands on the result as the one chunk. A node nobody streams from is
called with predict; a `stream` with no plain model node among its inputs is ignored.

Nulls: a skipped optional node (or a switch matching nothing) has null outputs, and every
reference into them is null; a map over null maps nothing; aggregates skip nulls; a
consumer of a skipped U sees its stream end. Nodes cancelled by another's failure or by
the deadline get no NodeFinished: the run's error tells what happened.

This module is the API and the scheduler; composer.plan analyses the graph before the run
(inputs, references, dependencies, streaming edges), composer.calls makes a node's model
calls (retries, predict, the stream producer and consumer), composer.events holds the events.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from composer import streams
from composer.aggregate import aggregate
from composer.calls import Calls, Invoker, kind_of
from composer.conditions import pick_case
from composer.events import Event, NodeChunk, NodeFinished, NodeStarted, Status
from composer.plan import Plan, Plans, check_inputs, prefixed
from composer.references import Missing, parse_ref
from composer.references import resolve as resolve_ref
from modelyard.backoff import Backoff
from modelyard.clock import SYSTEM_CLOCK, Clock, ClockTimeout, timeout_on
from modelyard.enum_names import AGGREGATE_METHODS
from modelyard.errors import DeadlineExceeded, InvalidArgument, ModelyardError
from modelyard.v1 import graph_pb2

__all__ = [
    "MAP_CONCURRENCY",
    "RETRY_BACKOFF",
    "STREAM_CONCURRENCY",
    "Event",
    "Invoker",
    "NodeChunk",
    "NodeFinished",
    "NodeObserver",
    "NodeStarted",
    "RunResult",
    "Status",
    "run_graph",
]

MAP_CONCURRENCY = 8  # a map node's calls in flight when it sets no `concurrency`
STREAM_CONCURRENCY = 4  # a stream consumer's per-chunk or per-segment calls in flight
# a node's retries on UNAVAILABLE: 50 ms before the first, doubling to at most 2 s (the run's
# deadline cuts it shorter); jittered, so the runs an outage failed together do not return together
RETRY_BACKOFF = Backoff(initial=0.05, cap=2.0)


class NodeObserver(Protocol):
    """Watches each node's work: the composer's node spans and latencies."""

    def node(self, node: graph_pb2.Node) -> AbstractContextManager[object]:
        """Entered around the node's work in the node's own task; an exception leaving it
        is how the node failed (an optional node's failure is then skipped)."""
        ...


class _Unobserved:
    def node(self, node: graph_pb2.Node) -> AbstractContextManager[object]:
        return nullcontext()


@dataclass(frozen=True, slots=True)
class RunResult:
    outputs: dict[str, Any]
    timeline: list[NodeFinished]  # in the order the nodes finished


async def run_graph(
    graph: graph_pb2.Graph,
    inputs: Mapping[str, Any],
    invoker: Invoker,
    *,
    deadline: float | None = None,
    on_event: Callable[[Event], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    observer: NodeObserver | None = None,
    plans: Plans | None = None,
) -> RunResult:
    """Runs `graph`. Raises InvalidArgument for bad inputs before any call; a failing node's
    error with its code and the message prefixed "node '<name>': "; DeadlineExceeded once
    `deadline` (absolute, on `clock`) passes. `clock` times everything: the deadline, node
    timeouts, retry backoff, and the timeline. `observer` watches each node's work.
    `plans` keeps the graph's plan between runs (a deployed graph's); None: made for this run."""
    # before the plan: input errors come first
    checked = check_inputs(graph, inputs) if plans is None else plans.inputs_of(graph).check(inputs)
    plan = Plan(graph) if plans is None else plans.of(graph)
    run = _Run(plan, checked, invoker, deadline, on_event, clock, observer)
    left = run.time_left()
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"the deadline passed before graph '{graph.name}' started")
    try:
        async with _deadline_scope(clock, left) as scope:
            await run.run_nodes()
    except TimeoutError:
        if not scope.expired():
            raise
        still = ", ".join(sorted(run.running)) or "none"
        raise DeadlineExceeded(
            f"deadline exceeded running graph '{graph.name}' (still running: {still})"
        ) from None
    return RunResult(run.outputs(), run.timeline)


def _deadline_scope(
    clock: Clock, seconds: float | None
) -> AbstractAsyncContextManager[asyncio.Timeout | ClockTimeout]:
    """The run's deadline. On the system clock, which is the event loop's own (monotonic),
    asyncio's timeout as is: `timeout_on` runs a watchdog task for any clock, one task and
    its cancellation per run."""
    if clock is SYSTEM_CLOCK:
        return asyncio.timeout(seconds)
    return timeout_on(clock, seconds)


class _Run:
    """One run: the plan (who waits for whom, who streams to whom), then the nodes."""

    def __init__(
        self,
        plan: Plan,
        inputs: dict[str, Any],
        invoker: Invoker,
        deadline: float | None,
        on_event: Callable[[Event], None] | None,
        clock: Clock,
        observer: NodeObserver | None,
    ) -> None:
        self.graph, self.inputs = plan.graph, inputs
        self.observer = observer or _Unobserved()
        self.deadline, self.on_event, self.clock = deadline, on_event, clock
        self.nodes, self.deps, self.stream_from = plan.nodes, plan.deps, plan.stream_from
        self.values: dict[str, Any] = {}  # finished nodes' outputs
        self.running: set[str] = set()
        self.timeline: list[NodeFinished] = []
        self.relays: dict[str, streams.Relay] = {}  # streamed-from node -> its relay
        self.inboxes: dict[str, asyncio.Queue[streams.Chunk | None]] = {}  # per consumer
        for name, upstream in self.stream_from.items():
            self.inboxes[name] = self.relays.setdefault(upstream, streams.Relay()).subscribe()
        self.calls = Calls(
            self,
            invoker,
            clock=clock,
            retry_backoff=RETRY_BACKOFF,
            stream_concurrency=STREAM_CONCURRENCY,
        )
        self.t0 = clock.now()

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock.now()

    async def run_nodes(self) -> None:
        order = {name: i for i, name in enumerate(self.nodes)}
        waiting = list(self.nodes)
        tasks: dict[asyncio.Task[None], str] = {}
        try:
            while waiting or tasks:
                ready = [name for name in waiting if self._ready(name)]
                if len(ready) == 1 and not tasks and ready[0] not in self.relays:
                    # the one node that can run now (a chain's next): in this task, as a task
                    # of its own and the wait for it cost more than a cheap node's other work.
                    # Nothing else can become ready before it ends: nobody streams from it.
                    name = ready[0]
                    waiting.remove(name)
                    self.running.add(name)
                    await self._node(self.nodes[name])
                    self.running.discard(name)
                    continue
                while ready:
                    for name in ready:  # starting U makes its stream consumers ready: loop
                        waiting.remove(name)
                        self.running.add(name)
                        task = asyncio.create_task(self._node(self.nodes[name]), name=name)
                        tasks[task] = name
                    ready = [name for name in waiting if self._ready(name)]
                if not tasks:
                    raise InvalidArgument(f"nodes {', '.join(waiting)} wait on each other")
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: order[tasks[t]]):
                    self.running.discard(tasks.pop(task))
                    task.result()  # a failed node fails the run: `finally` cancels the rest
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
                for task in tasks:  # retrieved, so that none is logged as never retrieved
                    _ = task.cancelled() or task.exception()

    def _ready(self, name: str) -> bool:
        upstream = self.stream_from.get(name)
        started = upstream is None or upstream in self.running or upstream in self.values
        return started and all(dep in self.values for dep in self.deps[name])

    async def _node(self, node: graph_pb2.Node) -> None:
        started = self.clock.now()
        self.emit(NodeStarted(node.name, started - self.t0))
        workers: list[str] = []
        status: Status = "ok"
        reason = ""
        try:
            with self.observer.node(node):
                self.values[node.name] = await self._body(node, workers)
        except ModelyardError as error:
            status, reason = ("skipped" if node.optional else "failed"), error.message
            if error.worker and error.worker not in workers:  # who failed it, for the timeline
                workers.append(error.worker)
            if not node.optional:
                path = f"nodes[{list(self.nodes).index(node.name)}]"  # as validation names it
                raise prefixed(error, f"node '{node.name}'", path, node=node.name) from error
            self.values[node.name] = None
        except Exception:
            status, reason = "failed", "internal error"
            raise
        finally:  # not when cancelled: the run's own error says why
            if status != "ok" or node.name in self.values:
                took = self.clock.now() - started
                at = started - self.t0
                timing = NodeFinished(node.name, at, took, tuple(workers), status, reason)
                self.timeline.append(timing)
                self.emit(timing)

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def _body(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any] | None:
        kind = node.WhichOneof("kind")
        if kind == "model":
            if node.name in self.stream_from:
                upstream, inbox = self.stream_from[node.name], self.inboxes[node.name]
                return await self.calls.consume(node, upstream, inbox, workers)
            if node.name in self.relays:
                return await self.calls.produce(node, self.relays[node.name], workers)
            inputs = self.call_inputs(node.model)
            return await self.calls.predict(node, node.model, inputs, workers)
        if kind == "map":
            return await self._map(node, workers)
        if kind == "switch":
            picked = pick_case(node.switch, self.resolve)
            if picked is None:
                return None
            branch, call = picked
            try:
                outputs = await self.calls.predict(node, call, self.call_inputs(call), workers)
            except ModelyardError as error:
                where = f"switch.cases[{branch}].call" if branch >= 0 else "switch.default"
                raise prefixed(error, "", where) from error
            return {**outputs, "branch": branch}
        if kind == "aggregate":
            spec = node.aggregate
            values = [self.resolve(text) for text in spec.values]
            method = AGGREGATE_METHODS.name(spec.method)
            return aggregate(method, list(spec.values), values, list(spec.weights))
        raise InvalidArgument("the node has no kind: set model, map, switch or aggregate")

    async def _map(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any]:
        spec = node.map
        over = self.resolve(spec.over)
        if over is None:
            return {"results": []}
        if not isinstance(over, list):
            raise InvalidArgument(f"'over' ({spec.over}) must be a list, got {kind_of(over)}")

        async def one(index: int, element: Any) -> dict[str, Any]:
            try:
                inputs = self.call_inputs(spec.call, item=element)
                return await self.calls.predict(node, spec.call, inputs, workers)
            except ModelyardError as error:
                raise prefixed(error, f"element {index}", "map.call") from error

        limit = spec.concurrency if spec.concurrency > 0 else MAP_CONCURRENCY
        return {"results": await streams.call_in_order(over, one, limit=limit)}

    def call_inputs(
        self,
        call: graph_pb2.ModelCall,
        *,
        item: Any = None,
        nodes: Mapping[str, Any] | None = None,
        fixed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        inputs = dict(fixed or {})
        for name, text in call.inputs.items():
            try:
                if name not in inputs:
                    inputs[name] = self.resolve(text, item, nodes)
            except InvalidArgument as error:
                raise prefixed(error, f"input '{name}'", field=f"inputs.{name}") from None
        return inputs

    def resolve(self, text: str, item: Any = None, nodes: Mapping[str, Any] | None = None) -> Any:
        ref = parse_ref(text)
        values = self.values if nodes is None else ChainMap(dict(nodes), self.values)
        if ref.kind == "node" and values.get(ref.name) is None:
            return None  # a skipped node's (or an unmatched switch's) fields are null too
        try:
            return resolve_ref(ref, self.inputs, values, item)
        except Missing as missing:
            raise InvalidArgument(str(missing)) from None

    def outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for name, text in self.graph.outputs.items():
            try:
                outputs[name] = self.resolve(text)
            except InvalidArgument as error:
                raise prefixed(error, f"output '{name}'", field=f"outputs.{name}") from None
        return outputs
