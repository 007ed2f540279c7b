"""One node's model calls, for composer.engine: predict, and the two ends of a streaming
edge. The producer calls a streamed-from node's model with predict_stream and hands each
chunk on, as a NodeChunk event and to its consumers' inboxes; the consumer calls its model on
each chunk, or each finished segment, of its upstream while that is still generating. Each
call is retried on UNAVAILABLE (up to the node's `retries`, with backoff) within the node's
timeout and the run's deadline, all on the run's clock. The calls go through an Invoker
(re-exported by composer.engine)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import grpc

from composer import streams
from composer.events import Event, NodeChunk
from composer.plan import prefixed
from composer.references import parse_ref
from modelyard.backoff import Backoff
from modelyard.client import Prediction, StreamEvent
from modelyard.clock import Clock, timeout_on
from modelyard.errors import DeadlineExceeded, InvalidArgument, ModelyardError
from modelyard.times import seconds
from modelyard.v1 import graph_pb2
from modelyard.values import from_value

T = TypeVar("T")
#: The retries' jitter, shared: a Random of its own per call would seed itself from the OS's
#: entropy (a getrandom syscall and ~25 us) on every node call, retried or not.
_JITTER = random.Random()


class Invoker(Protocol):
    """Calls models. A result, stream event or ModelyardError may carry a `worker`
    attribute (who served it, or failed it), for the timeline. Closing a predict_stream
    iterator must cancel its call. `hedge_after`: the node's hedging delay (None: none)."""

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        parameters: Mapping[str, Any],
        selector: str,
        timeout: float | None,
        hedge_after: float | None = None,
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


class Run(Protocol):
    """What a node's calls need of their run: its deadline, its events, and its values."""

    def time_left(self) -> float | None: ...

    def emit(self, event: Event) -> None: ...

    def call_inputs(
        self,
        call: graph_pb2.ModelCall,
        *,
        item: Any = None,
        nodes: Mapping[str, Any] | None = None,
        fixed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def resolve(
        self, text: str, item: Any = None, nodes: Mapping[str, Any] | None = None
    ) -> Any: ...


class Calls:
    """A run's model calls, through its invoker. `clock` times node timeouts and the waits
    between retries; `retry_backoff` spaces a node's retries; `stream_concurrency` is a
    consumer's calls in flight."""

    def __init__(
        self,
        run: Run,
        invoker: Invoker,
        *,
        clock: Clock,
        retry_backoff: Backoff,
        stream_concurrency: int,
    ) -> None:
        self.run, self.invoker, self.clock = run, invoker, clock
        self.retry_backoff, self.stream_concurrency = retry_backoff, stream_concurrency

    async def produce(
        self, node: graph_pb2.Node, relay: streams.Relay, workers: list[str]
    ) -> dict[str, Any]:
        """Runs a streamed-from node: its chunks go out as events and to its consumers."""
        call = node.model
        inputs, parameters = self.run.call_inputs(call), _parameters(call)
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
                        self.run.emit(NodeChunk(node.name, event.index, event.outputs))
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

    async def consume(
        self,
        node: graph_pb2.Node,
        upstream: str,
        inbox: asyncio.Queue[streams.Chunk | None],
        workers: list[str],
    ) -> dict[str, Any]:
        """Runs a stream consumer: one call per chunk or finished segment of its upstream."""
        call = node.model
        refs = {name: parse_ref(text) for name, text in call.inputs.items()}
        streamed = sorted(k for k, r in refs.items() if r.kind == "node" and r.name == upstream)
        by_segment = call.stream == graph_pb2.STREAM_MODE_SEGMENT
        done_segments: list[str] = []

        def text_of(chunk: streams.Chunk) -> str:
            text_ref = call.inputs[streamed[0]]
            text = self.run.resolve(text_ref, nodes={upstream: chunk})
            if not isinstance(text, str):
                raise InvalidArgument(f"segments need text, but '{text_ref}' is {kind_of(text)}")
            return text

        async def one(index: int, item: Any) -> dict[str, Any]:
            try:
                if by_segment:
                    inputs = self.run.call_inputs(call, fixed=dict.fromkeys(streamed, item))
                else:
                    inputs = self.run.call_inputs(call, nodes={upstream: item})
                return await self.predict(node, call, inputs, workers)
            except ModelyardError as error:
                raise prefixed(error, f"{'segment' if by_segment else 'chunk'} {index}") from error

        def deliver(index: int, item: Any, outputs: dict[str, Any]) -> None:
            if by_segment:
                done_segments.append(item)
                outputs = {"segment": item, **outputs}
            self.run.emit(NodeChunk(node.name, index, outputs))

        items: AsyncIterator[Any] = (
            streams.segments(inbox, call.segment_delimiters, text_of)
            if by_segment
            else streams.chunks(inbox)
        )
        results = await streams.call_in_order(
            items, one, limit=self.stream_concurrency, on_result=deliver
        )
        if by_segment:
            return {"segments": done_segments, "results": results}
        return {"results": results}

    async def predict(
        self,
        node: graph_pb2.Node,
        call: graph_pb2.ModelCall,
        inputs: dict[str, Any],
        workers: list[str],
    ) -> dict[str, Any]:
        parameters = _parameters(call)
        hedge_after = seconds(node.hedge_after) or None

        async def attempt(timeout: float | None) -> dict[str, Any]:
            result = await self.invoker.predict(
                call.model,
                inputs,
                parameters=parameters,
                selector=call.selector,
                timeout=timeout,
                hedge_after=hedge_after,
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
        timeout = seconds(node.timeout)
        limit = timeout if timeout > 0 else None
        retry = self.retry_backoff.counter(rng=_JITTER, clock=self.clock)
        while True:
            left = self.run.time_left()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"the run's deadline passed before calling '{model}'")
            try:
                if limit is None:  # no node timeout: the run's own deadline scope is enough
                    return await attempt(left)
                # the invoker's own timeout may be only advisory
                async with timeout_on(self.clock, limit) as scope:
                    return await attempt(_tightest(limit, left))
            except TimeoutError:
                if limit is None or not scope.expired():
                    raise
                raise DeadlineExceeded(f"model '{model}' took over the node's {limit:g}s") from None
            except ModelyardError as error:
                unavailable = error.code == grpc.StatusCode.UNAVAILABLE
                if not unavailable or retry.attempts >= node.retries or not may_retry():
                    raise
            await retry.wait()  # the run's deadline cuts this short


def kind_of(value: Any) -> str:
    """A value's kind, for error messages."""
    return "null" if value is None else type(value).__name__


def _parameters(call: graph_pb2.ModelCall) -> dict[str, Any]:
    return {name: from_value(value) for name, value in call.parameters.items()}


def _tightest(*limits: float | None) -> float | None:
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None


def _note(workers: list[str], result: object) -> None:
    worker = getattr(result, "worker", "")
    if worker and worker not in workers:
        workers.append(worker)


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
