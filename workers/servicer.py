"""modelyard.v1.Predict over gRPC: protobuf in, `WorkerService` call, protobuf out.

Errors are raised as `ModelyardError`s and mapped to statuses by the shared edge in
`modelyard_server.grpc_errors`; calls are counted and timed by the one in
`modelyard_server.grpc_metrics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc.aio

from modelyard.client import MAX_MESSAGE_BYTES
from modelyard.enum_names import value_kind
from modelyard.signature import Field
from modelyard.times import duration
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc, value_pb2
from modelyard.values import data_type, fill_value_map, from_value_map
from workers.predict_many import PredictMany, RecordCall
from workers.registry import ModelEntry, ModelState
from workers.service import WorkerService

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}


class PredictServicer(predict_pb2_grpc.PredictServicer):
    def __init__(
        self,
        service: WorkerService,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        record: RecordCall | None = None,
    ) -> None:
        """`max_message_bytes` is the server's send limit (an answer on a PredictMany stream
        above it fails its call alone); `record` counts PredictMany's calls."""
        self._service = service
        #: The PredictMany streams (`workers.predict_many`); closed at shutdown.
        self.many = PredictMany(self.predict, max_send_bytes=max_message_bytes, record=record)

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        return await self.predict(request)

    async def predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        """One Predict, for a unary call or a PredictMany message."""
        entry, call = self._service.prepare(
            request.model,
            from_value_map(request.inputs, "inputs"),
            from_value_map(request.parameters, "parameters"),
        )
        outputs = await self._service.predict(entry, call)
        return _response(entry, outputs, request.request_id)

    async def PredictMany(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.PredictManyRequest], context: Context
    ) -> None:
        # read with context.read(): the tracing interceptor leaves such handlers untraced
        await self.many.serve(context)

    async def PredictStream(
        self, request: pb.PredictStreamRequest, context: Context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        entry, call = self._service.prepare(
            request.model,
            from_value_map(request.inputs, "inputs"),
            from_value_map(request.parameters, "parameters"),
        )
        index = 0
        # closed here, in the call's task: the generation stops and its spans are recorded
        # at once, not whenever asyncio gets round to closing an abandoned generator
        async with contextlib.aclosing(self._service.predict_stream(entry, call)) as stream:
            async for final, outputs in stream:
                if final:
                    result = _response(entry, outputs, request.request_id)
                    yield pb.PredictStreamResponse(result=result)
                    break
                message = pb.PredictStreamResponse()
                message.chunk.index = index
                message.chunk.request_id = request.request_id
                fill_value_map(message.chunk.outputs, outputs)
                yield message
                index += 1

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ModelStatus(
                    model=e.name,
                    task=e.task,
                    version=e.version,
                    state=self._state(e),
                    state_reason=e.reason,
                )
                for e in self._service.registry.entries()
            ]
        )

    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: Context
    ) -> pb.GetModelMetadataResponse:
        entry = self._service.registry.get(request.model)
        model = entry.model
        batching = entry.config.batching
        response = pb.GetModelMetadataResponse(
            model=entry.name,
            task=entry.task,
            version=entry.version,
            source=entry.config.source or entry.config.class_path,
            device=entry.device,
            state=self._state(entry),
            state_reason=entry.reason,
            inputs=_fields(model.inputs if model else (), inputs=True),
            outputs=_fields(model.outputs if model else ()),
            parameters=_fields(model.parameters if model else ()),
            streaming=bool(model and model.streaming),
            batching=pb.BatchingInfo(
                max_batch_size=batching.max_batch_size,
                max_wait=duration(batching.max_wait_ms / 1000.0),
                max_queue_size=batching.max_queue_size,
            ),
            device_tags=self._service.tags,
        )
        fill_value_map(response.default_parameters, entry.default_parameters)
        return response

    def _state(self, entry: ModelEntry) -> pb.ModelState.ValueType:
        if self._service.draining:
            return pb.MODEL_STATE_DRAINING
        return _STATES[entry.state]


def _response(entry: ModelEntry, outputs: Mapping[str, Any], request_id: str) -> pb.PredictResponse:
    response = pb.PredictResponse(model=entry.name, version=entry.version, request_id=request_id)
    fill_value_map(response.outputs, outputs)
    return response


def _fields(fields: Sequence[Field], *, inputs: bool = False) -> list[pb.FieldSpec]:
    """The wire form of a signature. Only inputs are ever required (outputs are not given,
    parameters have defaults); element kinds are for lists only."""
    return [
        pb.FieldSpec(
            name=f.name,
            kind=value_kind(f.kind),
            element_kind=value_kind(f.element_kind)
            if f.kind == "list"
            else value_pb2.VALUE_KIND_UNSPECIFIED,
            required=inputs and f.required,
            description=f.description,
            dtype=data_type(f.dtype) if f.dtype else value_pb2.DATA_TYPE_UNSPECIFIED,
        )
        for f in fields
    ]
