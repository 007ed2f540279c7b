"""modelyard.v1.Composer over gRPC: protobuf in, ComposerService call, protobuf out.

A traced run starts by telling its caller its trace id (initial metadata `traceresponse`,
W3C Trace Context Level 2), so `modelyard run` can print it even for a run that fails."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from composer.engine import Event, NodeChunk, NodeFinished, NodeStarted, RunResult
from composer.service import ComposerService
from modelyard.enum_names import NODE_STATUSES
from modelyard.times import duration
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from modelyard_server.telemetry.spans import TRACE_RESPONSE, trace_response

Context = grpc.aio.ServicerContext[Any, Any]


class ComposerServicer(composer_pb2_grpc.ComposerServicer):
    def __init__(self, service: ComposerService) -> None:
        self._service = service

    async def Run(self, request: pb.RunRequest, context: Context) -> pb.RunResponse:
        await _send_trace(context)
        result = await self._service.run(
            request.name,
            request.graph if request.HasField("graph") else None,
            from_value_map(request.inputs, "inputs"),
            time_remaining=context.time_remaining(),
        )
        return _run_response(result)

    async def RunStream(
        self, request: pb.RunStreamRequest, context: Context
    ) -> AsyncIterator[pb.RunStreamResponse]:
        await _send_trace(context)
        stream = self._service.run_stream(
            request.name,
            request.graph if request.HasField("graph") else None,
            from_value_map(request.inputs, "inputs"),
            time_remaining=context.time_remaining(),
        )
        async with contextlib.aclosing(stream):  # the client went away: the run is cancelled
            async for item in stream:
                if isinstance(item, RunResult):
                    yield pb.RunStreamResponse(result=_run_response(item))
                else:
                    yield _event(item)

    async def DeployGraph(
        self, request: pb.DeployGraphRequest, context: Context
    ) -> pb.DeployGraphResponse:
        return pb.DeployGraphResponse(warnings=await self._service.deploy(request.graph))

    async def GetGraph(self, request: pb.GetGraphRequest, context: Context) -> pb.GetGraphResponse:
        return pb.GetGraphResponse(graph=self._service.get(request.name))

    async def ListGraphs(
        self, request: pb.ListGraphsRequest, context: Context
    ) -> pb.ListGraphsResponse:
        return pb.ListGraphsResponse(graphs=self._service.list())

    async def DeleteGraph(
        self, request: pb.DeleteGraphRequest, context: Context
    ) -> pb.DeleteGraphResponse:
        await self._service.delete(request.name)
        return pb.DeleteGraphResponse()

    async def ValidateGraph(
        self, request: pb.ValidateGraphRequest, context: Context
    ) -> pb.ValidateGraphResponse:
        report = await self._service.validate(request.graph)
        return pb.ValidateGraphResponse(errors=report.errors, warnings=report.warnings)


async def _send_trace(context: Context) -> None:
    value = trace_response()  # the call's server span: the run's trace
    if value is not None:
        await context.send_initial_metadata(((TRACE_RESPONSE, value),))


def _timing(event: NodeFinished) -> pb.NodeTiming:
    return pb.NodeTiming(
        node=event.node,
        start_offset=duration(event.started_at),
        duration=duration(event.duration),
        workers=list(event.workers),
        status=NODE_STATUSES.value(event.status),
        reason=event.reason,
    )


def _run_response(result: RunResult) -> pb.RunResponse:
    response = pb.RunResponse(timeline=[_timing(t) for t in result.timeline])
    fill_value_map(response.outputs, result.outputs)
    return response


def _event(event: Event) -> pb.RunStreamResponse:
    if isinstance(event, NodeStarted):
        started = pb.NodeStarted(node=event.node, start_offset=duration(event.at))
        return pb.RunStreamResponse(node_started=started)
    if isinstance(event, NodeFinished):
        return pb.RunStreamResponse(node_finished=_timing(event))
    message = pb.RunStreamResponse()
    chunk: NodeChunk = event
    message.chunk.node = chunk.node
    message.chunk.index = chunk.index
    fill_value_map(message.chunk.outputs, chunk.outputs)
    return message
