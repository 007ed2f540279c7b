"""A small Python client for modelyard composers: run graphs, stream their events, and
deploy, validate, list and delete them.

    from modelyard.composer_client import Chunk, ComposerClient, Result

    with ComposerClient("localhost:50070") as composer:
        print(composer.run("inference-graph", prompt="I have an idea!").outputs)
        for event in composer.run_stream("streaming", prompt="Once upon a time"):
            if isinstance(event, Chunk):
                print(event.outputs.get("text", ""), end="", flush=True)
            elif isinstance(event, Result):
                print(event.outputs)

A graph is a deployed graph's name, a `modelyard.v1.Graph` (what `GraphBuilder.build()`
returns), or a mapping in the shape of the YAML files in examples/graphs/. Values are plain
Python, as with `modelyard.client.Client`; failed calls raise `modelyard.errors` classes
(NotFound for an unknown graph, InvalidArgument naming the bad input or node, ...), with
their `reason` (GRAPH_NOT_FOUND, GRAPH_INVALID, a worker's own) and `field_violations`
("nodes[2].inputs.text").
`AsyncComposerClient` is the same for asyncio code.

A composer that traces a run says so: the run's `Result.trace_id`, and `on_trace` of
`run_stream` called with it before the first event (so a run that fails can be looked up
too), give the trace id to find the run in Jaeger.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from modelyard.channels import aio_channel, sync_channel
from modelyard.client import CHANNEL_OPTIONS
from modelyard.enum_names import NODE_STATUSES
from modelyard.errors import from_rpc_error
from modelyard.graph_spec import graph_from_dict
from modelyard.times import seconds
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.v1 import graph_pb2 as g
from modelyard.values import fill_value_map, from_value_map

GraphSpec = g.Graph | Mapping[str, Any]
GraphRef = str | GraphSpec  # a deployed graph's name, or a graph to run inline
#: The metadata a composer sends first when it traces a run: W3C Trace Context Level 2's
#: `traceresponse`, "00-<trace id>-<span id>-<flags>".
TRACE_RESPONSE = "traceresponse"


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: str
    at: float  # seconds since the run started


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """How one node went: an event of a streamed run, and an entry of a run's timeline."""

    node: str
    started_at: float  # seconds since the run started
    duration: float  # seconds
    workers: tuple[str, ...]  # the replicas that served it (failed: the one that failed it)
    status: str  # "ok", "failed", or "skipped" (an optional node failed: outputs null)
    reason: str = ""  # why it failed or was skipped


@dataclass(frozen=True, slots=True)
class Chunk:
    """A partial result a streaming node produced while the run went on."""

    node: str
    index: int  # its position in that node's stream
    outputs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Result:
    """A run's outputs; the last event of a streamed run."""

    outputs: dict[str, Any]
    timeline: tuple[NodeFinished, ...]  # in the order the nodes finished
    trace_id: str = ""  # the run's trace (32 hex digits), when the composer traced it


RunEvent = NodeStarted | NodeFinished | Chunk | Result


@dataclass(frozen=True, slots=True)
class Validation:
    """What checking a graph found: `errors` make it unusable, `warnings` do not (e.g. a
    model nobody serves yet)."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def graph_of(graph: GraphSpec) -> g.Graph:
    """The Graph proto of a graph given as a proto or in its file form."""
    return graph if isinstance(graph, g.Graph) else graph_from_dict(graph)


AnyRunRequest = TypeVar("AnyRunRequest", pb.RunRequest, pb.RunStreamRequest)


def build_run_request(
    message_type: type[AnyRunRequest], graph: GraphRef, inputs: Mapping[str, Any]
) -> AnyRunRequest:
    if isinstance(graph, str):
        request = message_type(name=graph)
    else:
        request = message_type(graph=graph_of(graph))
    fill_value_map(request.inputs, inputs)
    return request


def timing_of(message: pb.NodeTiming) -> NodeFinished:
    return NodeFinished(
        node=message.node,
        started_at=seconds(message.start_offset),
        duration=seconds(message.duration),
        workers=tuple(message.workers),
        status=NODE_STATUSES.name(message.status),
        reason=message.reason,
    )


def result_of(message: pb.RunResponse, trace_id: str = "") -> Result:
    timeline = tuple(timing_of(timing) for timing in message.timeline)
    return Result(from_value_map(message.outputs), timeline, trace_id)


def trace_id_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The trace id in a composer's `traceresponse`, or "" when it sent none."""
    for key, value in metadata or ():
        if key == TRACE_RESPONSE and isinstance(value, str):
            parts = value.split("-")
            if len(parts) == 4 and len(parts[1]) == 32:
                return parts[1]
    return ""


def event_of(message: pb.RunStreamResponse, trace_id: str = "") -> RunEvent | None:
    """The event a RunStream message carries; None for a kind newer than this client, which
    it skips as protobuf skips unknown fields."""
    kind = message.WhichOneof("event")
    if kind == "node_started":
        started = message.node_started
        return NodeStarted(started.node, seconds(started.start_offset))
    if kind == "node_finished":
        return timing_of(message.node_finished)
    if kind == "chunk":
        chunk = message.chunk
        return Chunk(chunk.node, chunk.index, from_value_map(chunk.outputs))
    if kind == "result":
        return result_of(message.result, trace_id)
    return None


class ComposerClient:
    """A blocking client of one composer. With `credentials` it talks TLS (plaintext
    otherwise); `token` goes on every call as a bearer token (deploy and delete need an
    admin's when the composer checks tokens)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self._channel = sync_channel(
            address, options=CHANNEL_OPTIONS, credentials=credentials, token=token
        )
        self._stub = composer_pb2_grpc.ComposerStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> ComposerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def run(
        self,
        graph: GraphRef,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> Result:
        """Runs `graph` and returns its outputs with the timeline of its nodes."""
        request = build_run_request(pb.RunRequest, graph, {**(inputs or {}), **named_inputs})
        try:
            reply, call = self._stub.Run.with_call(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return result_of(reply, trace_id_of(call.initial_metadata()))

    def run_stream(
        self,
        graph: GraphRef,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        on_trace: Callable[[str], None] | None = None,
        **named_inputs: Any,
    ) -> Iterator[RunEvent]:
        """Runs `graph`, yielding node events and chunks as they happen, then the Result.
        `on_trace` is called with the run's trace id first, when the composer traces it."""
        request = build_run_request(pb.RunStreamRequest, graph, {**(inputs or {}), **named_inputs})
        call = self._stub.RunStream(request, timeout=timeout or self.timeout)
        try:
            trace_id = trace_id_of(call.initial_metadata())  # sent before the first message
            if trace_id and on_trace is not None:
                on_trace(trace_id)
            for message in call:
                if (event := event_of(message, trace_id)) is not None:
                    yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # a consumer that stops early stops the run and its node calls

    def deploy(self, graph: GraphSpec, *, timeout: float | None = None) -> list[str]:
        """Validates and stores `graph` under its name (replacing one); returns the warnings."""
        request = pb.DeployGraphRequest(graph=graph_of(graph))
        try:
            reply = self._stub.DeployGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.warnings)

    def validate(self, graph: GraphSpec, *, timeout: float | None = None) -> Validation:
        """Checks `graph` against the running cluster without storing it."""
        request = pb.ValidateGraphRequest(graph=graph_of(graph))
        try:
            reply = self._stub.ValidateGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return Validation(tuple(reply.errors), tuple(reply.warnings))

    def get(self, name: str, *, timeout: float | None = None) -> g.Graph:
        try:
            reply = self._stub.GetGraph(
                pb.GetGraphRequest(name=name), timeout=timeout or self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return reply.graph

    def delete(self, name: str, *, timeout: float | None = None) -> None:
        request = pb.DeleteGraphRequest(name=name)
        try:
            self._stub.DeleteGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def list(self, *, timeout: float | None = None) -> list[g.Graph]:
        """The deployed graphs, sorted by name."""
        try:
            reply = self._stub.ListGraphs(pb.ListGraphsRequest(), timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.graphs)


class AsyncComposerClient:
    """The asyncio client of one composer; create it inside the running loop. `interceptors`
    go on its channel (tracing interceptors carry the caller's trace to the composer);
    `credentials` and `token` as for `ComposerClient`."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self._channel = aio_channel(
            address,
            options=CHANNEL_OPTIONS,
            credentials=credentials,
            token=token,
            interceptors=interceptors,
        )
        self._stub = composer_pb2_grpc.ComposerStub(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncComposerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def run(
        self,
        graph: GraphRef,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> Result:
        """Runs `graph` and returns its outputs with the timeline of its nodes."""
        request = build_run_request(pb.RunRequest, graph, {**(inputs or {}), **named_inputs})
        call = self._stub.Run(request, timeout=timeout or self.timeout)
        try:
            reply = await call
            metadata = await call.initial_metadata()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return result_of(reply, trace_id_of(metadata))

    async def run_stream(
        self,
        graph: GraphRef,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        on_trace: Callable[[str], None] | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[RunEvent]:
        """Runs `graph`, yielding node events and chunks as they happen, then the Result.
        `on_trace` is called with the run's trace id first, when the composer traces it."""
        request = build_run_request(pb.RunStreamRequest, graph, {**(inputs or {}), **named_inputs})
        call = self._stub.RunStream(request, timeout=timeout or self.timeout)
        try:
            trace_id = trace_id_of(await call.initial_metadata())
            if trace_id and on_trace is not None:
                on_trace(trace_id)
            async for message in call:
                if (event := event_of(message, trace_id)) is not None:
                    yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def deploy(self, graph: GraphSpec, *, timeout: float | None = None) -> list[str]:
        """Validates and stores `graph` under its name (replacing one); returns the warnings."""
        request = pb.DeployGraphRequest(graph=graph_of(graph))
        try:
            reply = await self._stub.DeployGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.warnings)

    async def validate(self, graph: GraphSpec, *, timeout: float | None = None) -> Validation:
        """Checks `graph` against the running cluster without storing it."""
        request = pb.ValidateGraphRequest(graph=graph_of(graph))
        try:
            reply = await self._stub.ValidateGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return Validation(tuple(reply.errors), tuple(reply.warnings))

    async def get(self, name: str, *, timeout: float | None = None) -> g.Graph:
        request = pb.GetGraphRequest(name=name)
        try:
            reply = await self._stub.GetGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return reply.graph

    async def delete(self, name: str, *, timeout: float | None = None) -> None:
        request = pb.DeleteGraphRequest(name=name)
        try:
            await self._stub.DeleteGraph(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def list(self, *, timeout: float | None = None) -> list[g.Graph]:
        """The deployed graphs, sorted by name."""
        request = pb.ListGraphsRequest()
        try:
            reply = await self._stub.ListGraphs(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return list(reply.graphs)
