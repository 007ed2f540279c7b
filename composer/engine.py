"""Runs one inference graph for one set of inputs against an injected invoker.

    result = await run_graph(graph, {"prompt": "Once"}, invoker, deadline=time.monotonic() + 5)

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
"""

from __future__ import annotations

import asyncio
import time
from collections import ChainMap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast, get_args

import grpc

from composer import segments as streams
from composer.aggregate import aggregate
from composer.conditions import pick_case
from composer.references import Missing, Ref, parse_ref, resolve
from modelyard.client import Prediction, StreamEvent
from modelyard.errors import DeadlineExceeded, InvalidArgument, ModelyardError, from_status
from modelyard.signature import Field, Kind, check_value
from modelyard.v1 import graph_pb2
from modelyard.values import from_value

T = TypeVar("T")
Status = Literal["ok", "failed", "skipped"]
MAP_CONCURRENCY = 8  # a map node's calls in flight when it sets no `concurrency`
STREAM_CONCURRENCY = 4  # a stream consumer's per-chunk or per-segment calls in flight
RETRY_BACKOFF = 0.05  # seconds before a node's first retry; doubles with each retry


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: str
    at: float  # seconds since the run started


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """How one node went: an event, and an entry of the timeline (proto NodeTiming)."""

    node: str
    started_at: float  # seconds since the run started
    duration: float
    workers: tuple[str, ...]
    status: Status
    reason: str = ""


NodeTiming = NodeFinished


@dataclass(frozen=True, slots=True)
class NodeChunk:
    node: str
    index: int
    outputs: dict[str, Any]


Event = NodeStarted | NodeFinished | NodeChunk


@dataclass(frozen=True, slots=True)
class RunResult:
    outputs: dict[str, Any]
    timeline: list[NodeFinished]  # in the order the nodes finished


class Invoker(Protocol):
    """Calls models. A result may carry a `worker` attribute (who served it), for the
    timeline. Closing a predict_stream iterator must cancel its call."""

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
    ) -> Prediction: ...

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
    ) -> AsyncIterator[StreamEvent]: ...


async def run_graph(
    graph: graph_pb2.Graph,
    inputs: Mapping[str, Any],
    invoker: Invoker,
    *,
    deadline: float | None = None,
    on_event: Callable[[Event], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Runs `graph`. Raises InvalidArgument for bad inputs before any call; a failing node's
    error with its code and the message prefixed "node '<name>': "; DeadlineExceeded once
    `deadline` (absolute, on `clock`) passes."""
    run = _Run(graph, check_inputs(graph, inputs), invoker, deadline, on_event, clock)
    left = run.time_left()
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"the deadline passed before graph '{graph.name}' started")
    scope = asyncio.timeout(left)
    try:
        async with scope:
            await run.run_nodes()
    except TimeoutError:
        if not scope.expired():
            raise
        still = ", ".join(sorted(run.running)) or "none"
        raise DeadlineExceeded(
            f"deadline exceeded running graph '{graph.name}' (still running: {still})"
        ) from None
    return RunResult(run.outputs(), run.timeline)


def check_inputs(graph: graph_pb2.Graph, given: Mapping[str, Any]) -> dict[str, Any]:
    """A run's inputs checked against the graph's, and optional ones defaulted (null counts
    as not given for those); raises InvalidArgument naming the input."""
    takes = ", ".join(spec.name for spec in graph.inputs) or "none"
    declared = {spec.name for spec in graph.inputs}
    for name in given:
        if name not in declared:
            raise InvalidArgument(f"unknown input '{name}'; graph '{graph.name}' takes: {takes}")
    checked: dict[str, Any] = {}
    for spec in graph.inputs:
        kind = spec.kind or "any"
        if kind not in get_args(Kind):
            raise InvalidArgument(f"graph input '{spec.name}' has unknown kind {kind!r}")
        value = given.get(spec.name)
        if spec.name in given and (value is not None or spec.required):
            checked[spec.name] = check_value("input", Field(spec.name, cast(Kind, kind)), value)
        elif spec.required:
            raise InvalidArgument(f"missing input '{spec.name}' ({kind}); graph takes: {takes}")
        else:
            checked[spec.name] = from_value(spec.default) if spec.HasField("default") else None
    return checked


class _Run:
    """One run: the plan (who waits for whom, who streams to whom), then the nodes."""

    def __init__(
        self,
        graph: graph_pb2.Graph,
        inputs: dict[str, Any],
        invoker: Invoker,
        deadline: float | None,
        on_event: Callable[[Event], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.graph, self.inputs, self.invoker = graph, inputs, invoker
        self.deadline, self.on_event, self.clock = deadline, on_event, clock
        self.nodes = {node.name: node for node in graph.nodes}
        if len(self.nodes) != len(graph.nodes):
            raise InvalidArgument(f"graph '{graph.name}' has two nodes of the same name")
        self.values: dict[str, Any] = {}  # finished nodes' outputs
        self.running: set[str] = set()
        self.timeline: list[NodeFinished] = []
        self.deps = {name: self._references(node) for name, node in self.nodes.items()}
        for name, text in graph.outputs.items():
            try:
                self._check_known(parse_ref(text))
            except InvalidArgument as error:
                raise _prefixed(error, f"output '{name}'") from None
        self.stream_from: dict[str, str] = {}  # consumer -> the node it streams from
        self.relays: dict[str, streams.Relay] = {}  # streamed-from node -> its relay
        self.inboxes: dict[str, asyncio.Queue[streams.Chunk | None]] = {}  # per consumer
        for name, node in self.nodes.items():
            if upstream := self._streamed_upstream(node):
                self.stream_from[name] = upstream
                self.deps[name].discard(upstream)
                self.inboxes[name] = self.relays.setdefault(upstream, streams.Relay()).subscribe()
        self.t0 = clock()

    def _references(self, node: graph_pb2.Node) -> set[str]:
        # unset sub-messages read as empty, so only the node's own kind contributes
        calls = [node.model, node.map.call, *(case.call for case in node.switch.cases)]
        if node.switch.HasField("default"):
            calls.append(node.switch.default)
        texts = [*node.aggregate.values, node.map.over]
        texts += [case.when.value for case in node.switch.cases]
        texts += [text for call in calls for text in call.inputs.values()]
        try:
            refs = [parse_ref(text) for text in texts if text]
            for ref in refs:
                self._check_known(ref)
        except InvalidArgument as error:
            raise _prefixed(error, f"node '{node.name}'") from None
        return {ref.name for ref in refs if ref.kind == "node"}

    def _check_known(self, ref: Ref) -> None:
        known = {"node": self.nodes, "input": self.inputs}.get(ref.kind)
        if known is not None and ref.name not in known:
            raise InvalidArgument(f"'{ref}' names no {ref.kind}")

    def _streamed_upstream(self, node: graph_pb2.Node) -> str | None:
        if not _is_model(node) or node.model.stream == graph_pb2.STREAM_MODE_UNSPECIFIED:
            return None
        refs = [parse_ref(text) for text in node.model.inputs.values()]
        found = sorted({r.name for r in refs if r.kind == "node" and _is_plain(self.nodes[r.name])})
        if len(found) > 1:
            raise InvalidArgument(
                f"node '{node.name}': a streaming call consumes one model node's stream, "
                f"but its inputs reference {', '.join(found)}"
            )
        return found[0] if found else None

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    async def run_nodes(self) -> None:
        order = {name: i for i, name in enumerate(self.nodes)}
        waiting = list(self.nodes)
        tasks: dict[asyncio.Task[None], str] = {}
        try:
            while waiting or tasks:
                while ready := [name for name in waiting if self._ready(name)]:
                    for name in ready:  # starting U makes its stream consumers ready: loop
                        waiting.remove(name)
                        self.running.add(name)
                        task = asyncio.create_task(self._node(self.nodes[name]), name=name)
                        tasks[task] = name
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
        started = self.clock()
        self._emit(NodeStarted(node.name, started - self.t0))
        workers: list[str] = []
        status: Status = "ok"
        reason = ""
        try:
            self.values[node.name] = await self._body(node, workers)
        except ModelyardError as error:
            status, reason = ("skipped" if node.optional else "failed"), error.message
            if not node.optional:
                raise _prefixed(error, f"node '{node.name}'") from error
            self.values[node.name] = None
        except Exception:
            status, reason = "failed", "internal error"
            raise
        finally:  # not when cancelled: the run's own error says why
            if status != "ok" or node.name in self.values:
                took = self.clock() - started
                at = started - self.t0
                timing = NodeFinished(node.name, at, took, tuple(workers), status, reason)
                self.timeline.append(timing)
                self._emit(timing)

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def _body(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any] | None:
        kind = node.WhichOneof("kind")
        if kind == "model":
            if node.name in self.stream_from:
                return await self._consume(node, workers)
            if node.name in self.relays:
                return await self._produce(node, workers)
            return await self._predict(node, node.model, self._inputs(node.model), workers)
        if kind == "map":
            return await self._map(node, workers)
        if kind == "switch":
            picked = pick_case(node.switch, self._resolve)
            if picked is None:
                return None
            branch, call = picked
            outputs = await self._predict(node, call, self._inputs(call), workers)
            return {**outputs, "branch": branch}
        if kind == "aggregate":
            spec = node.aggregate
            values = [self._resolve(text) for text in spec.values]
            return aggregate(spec.method, list(spec.values), values, list(spec.weights))
        raise InvalidArgument("the node has no kind: set model, map, switch or aggregate")

    async def _map(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any]:
        spec = node.map
        over = self._resolve(spec.over)
        if over is None:
            return {"results": []}
        if not isinstance(over, list):
            raise InvalidArgument(f"'over' ({spec.over}) must be a list, got {_kind(over)}")

        async def one(index: int, element: Any) -> dict[str, Any]:
            try:
                inputs = self._inputs(spec.call, item=element)
                return await self._predict(node, spec.call, inputs, workers)
            except ModelyardError as error:
                raise _prefixed(error, f"element {index}") from error

        limit = spec.concurrency if spec.concurrency > 0 else MAP_CONCURRENCY
        return {"results": await streams.call_in_order(over, one, limit=limit)}

    async def _produce(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any]:
        """Runs a streamed-from node: its chunks go out as events and to its consumers."""
        call, relay = node.model, self.relays[node.name]
        inputs, parameters = self._inputs(call), _parameters(call)
        delivered = 0

        async def attempt(timeout: float | None) -> dict[str, Any]:
            nonlocal delivered
            final: dict[str, Any] | None = None
            stream = self.invoker.predict_stream(
                call.model, inputs, parameters=parameters, selector=call.selector, timeout=timeout
            )
            try:
                async for event in stream:
                    _note(workers, event)
                    if event.final:
                        final = event.outputs
                    else:
                        delivered += 1
                        self._emit(NodeChunk(node.name, event.index, event.outputs))
                        relay.put(event.outputs)
            finally:  # closing the stream cancels the call, and with it the generation
                await _close(stream)
            if final is None:
                raise ModelyardError(f"model '{call.model}' ended its stream without a result")
            return final

        try:
            # a retry after a chunk went out would repeat output: only before the first
            final = await self._retrying(node, call.model, attempt, lambda: delivered == 0)
            if not delivered:
                relay.put(final)
            return final
        finally:
            relay.close()  # also when this node fails or is skipped: its consumers go on

    async def _consume(self, node: graph_pb2.Node, workers: list[str]) -> dict[str, Any]:
        """Runs a stream consumer: one call per chunk or finished segment of its upstream."""
        call, upstream, inbox = node.model, self.stream_from[node.name], self.inboxes[node.name]
        refs = {name: parse_ref(text) for name, text in call.inputs.items()}
        streamed = sorted(k for k, r in refs.items() if r.kind == "node" and r.name == upstream)
        by_segment = call.stream == graph_pb2.STREAM_MODE_SEGMENT
        done_segments: list[str] = []

        def text_of(chunk: streams.Chunk) -> str:
            text_ref = call.inputs[streamed[0]]
            text = self._resolve(text_ref, nodes={upstream: chunk})
            if not isinstance(text, str):
                raise InvalidArgument(f"segments need text, but '{text_ref}' is {_kind(text)}")
            return text

        async def one(index: int, item: Any) -> dict[str, Any]:
            try:
                if by_segment:
                    inputs = self._inputs(call, fixed=dict.fromkeys(streamed, item))
                else:
                    inputs = self._inputs(call, nodes={upstream: item})
                return await self._predict(node, call, inputs, workers)
            except ModelyardError as error:
                raise _prefixed(error, f"{'segment' if by_segment else 'chunk'} {index}") from error

        def deliver(index: int, item: Any, outputs: dict[str, Any]) -> None:
            if by_segment:
                done_segments.append(item)
                outputs = {"segment": item, **outputs}
            self._emit(NodeChunk(node.name, index, outputs))

        items: AsyncIterator[Any] = (
            streams.segments(inbox, call.segment_delimiters, text_of)
            if by_segment
            else streams.chunks(inbox)
        )
        results = await streams.call_in_order(
            items, one, limit=STREAM_CONCURRENCY, on_result=deliver
        )
        if by_segment:
            return {"segments": done_segments, "results": results}
        return {"results": results}

    async def _predict(
        self,
        node: graph_pb2.Node,
        call: graph_pb2.ModelCall,
        inputs: dict[str, Any],
        workers: list[str],
    ) -> dict[str, Any]:
        parameters = _parameters(call)

        async def attempt(timeout: float | None) -> dict[str, Any]:
            result = await self.invoker.predict(
                call.model, inputs, parameters=parameters, selector=call.selector, timeout=timeout
            )
            _note(workers, result)
            return dict(result.outputs)

        return await self._retrying(node, call.model, attempt, lambda: True)

    async def _retrying(
        self,
        node: graph_pb2.Node,
        model: str,
        attempt: Callable[[float | None], Awaitable[T]],
        may_retry: Callable[[], bool],
    ) -> T:
        """Makes attempts until one succeeds: up to `node.retries` more on UNAVAILABLE (while
        `may_retry()`), each within the node's timeout and the run's deadline. The invoker
        already retries on other replicas; this outer layer rides out a brief outage."""
        limit = node.timeout_seconds if node.timeout_seconds > 0 else None
        retry = 0
        while True:
            left = self.time_left()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"the run's deadline passed before calling '{model}'")
            scope = asyncio.timeout(limit)  # the invoker's own timeout may be only advisory
            try:
                async with scope:
                    return await attempt(_tightest(limit, left))
            except TimeoutError:
                if not scope.expired():
                    raise
                raise DeadlineExceeded(f"model '{model}' took over the node's {limit:g}s") from None
            except ModelyardError as error:
                unavailable = error.code == grpc.StatusCode.UNAVAILABLE
                if not unavailable or retry >= node.retries or not may_retry():
                    raise
            await asyncio.sleep(RETRY_BACKOFF * 2**retry)  # the run's deadline cuts this short
            retry += 1

    def _inputs(
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
                    inputs[name] = self._resolve(text, item, nodes)
            except InvalidArgument as error:
                raise _prefixed(error, f"input '{name}'") from None
        return inputs

    def _resolve(self, text: str, item: Any = None, nodes: Mapping[str, Any] | None = None) -> Any:
        ref = parse_ref(text)
        values = self.values if nodes is None else ChainMap(dict(nodes), self.values)
        if ref.kind == "node" and values.get(ref.name) is None:
            return None  # a skipped node's (or an unmatched switch's) fields are null too
        try:
            return resolve(ref, self.inputs, values, item)
        except Missing as missing:
            raise InvalidArgument(str(missing)) from None

    def outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for name, text in self.graph.outputs.items():
            try:
                outputs[name] = self._resolve(text)
            except InvalidArgument as error:
                raise _prefixed(error, f"output '{name}'") from None
        return outputs


def _is_model(node: graph_pb2.Node) -> bool:
    return node.WhichOneof("kind") == "model"


def _is_plain(node: graph_pb2.Node) -> bool:
    return _is_model(node) and node.model.stream == graph_pb2.STREAM_MODE_UNSPECIFIED


def _parameters(call: graph_pb2.ModelCall) -> dict[str, Any]:
    return {name: from_value(value) for name, value in call.parameters.items()}


def _prefixed(error: ModelyardError, where: str) -> ModelyardError:
    return from_status(error.code, f"{where}: {error.message}")


def _tightest(*limits: float | None) -> float | None:
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None


def _note(workers: list[str], result: object) -> None:
    worker = getattr(result, "worker", "")
    if worker and worker not in workers:
        workers.append(worker)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
