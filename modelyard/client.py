"""A small Python client for modelyard workers (and, later, composers).

    from modelyard.client import Client

    with Client("localhost:50051") as client:
        print(client.predict("sentiment", text="I love it").outputs)
        for event in client.predict_stream("gpt2", text="Once upon a time"):
            print(event.outputs.get("text", ""), end="", flush=True)

`AsyncClient` is the same for asyncio code. Failed calls raise `modelyard.errors`
classes (NotFound, InvalidArgument, Unavailable, ...) carrying the server's message and
the details a program branches on: `error.reason` ("INPUT_MISSING", a `Reason`) and
`error.field` / `error.field_violations` ("inputs.text").
Values are plain Python: str, int, float, bool, None, bytes, list, dict, numpy arrays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from modelyard.channels import aio_channel, sync_channel
from modelyard.errors import from_rpc_error
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc
from modelyard.values import fill_value_map, from_value_map

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True, slots=True)
class Prediction:
    model: str
    version: str
    outputs: dict[str, Any]
    worker: str = ""  # the replica that answered, when a routed client chose it


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A partial result (`final` False) or the final result of a PredictStream."""

    index: int
    outputs: dict[str, Any]
    final: bool
    worker: str = ""  # the replica that streams it, when a routed client chose it


AnyRequest = TypeVar("AnyRequest", pb.PredictRequest, pb.PredictStreamRequest)


def build_request(
    message_type: type[AnyRequest],
    model: str,
    inputs: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
) -> AnyRequest:
    request = message_type(model=model)
    fill_value_map(request.inputs, inputs)
    fill_value_map(request.parameters, parameters or {})
    return request


def prediction_of(response: pb.PredictResponse, worker: str = "") -> Prediction:
    return Prediction(response.model, response.version, from_value_map(response.outputs), worker)


def stream_event_of(message: pb.PredictStreamResponse, index: int, worker: str = "") -> StreamEvent:
    if message.HasField("result"):
        return StreamEvent(index, from_value_map(message.result.outputs), True, worker)
    return StreamEvent(message.chunk.index, from_value_map(message.chunk.outputs), False, worker)


class Client:
    """A blocking client of one worker. With `credentials` it talks TLS (plaintext
    otherwise); `token` goes on every call as a bearer token."""

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
        self._stub = predict_pb2_grpc.PredictStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> Prediction:
        request = build_request(
            pb.PredictRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        try:
            return prediction_of(self._stub.Predict(request, timeout=timeout or self.timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> Iterator[StreamEvent]:
        request = build_request(
            pb.PredictStreamRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        call = self._stub.PredictStream(request, timeout=timeout or self.timeout)
        try:
            for index, message in enumerate(call):
                yield stream_event_of(message, index)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # a consumer that stops early stops the model's work

    def list_models(self) -> list[pb.ModelStatus]:
        try:
            return list(self._stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout).models)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def metadata(self, model: str) -> pb.GetModelMetadataResponse:
        try:
            request = pb.GetModelMetadataRequest(model=model)
            return self._stub.GetModelMetadata(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


class AsyncClient:
    """The asyncio client of one worker; create it inside the running loop. `interceptors`
    go on its channel (a service passes its tracing interceptors there); `credentials` and
    `token` as for `Client`."""

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
        self._stub = predict_pb2_grpc.PredictStub(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> Prediction:
        request = build_request(
            pb.PredictRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        try:
            response = await self._stub.Predict(request, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return prediction_of(response)

    async def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[StreamEvent]:
        request = build_request(
            pb.PredictStreamRequest, model, {**(inputs or {}), **named_inputs}, parameters
        )
        call = self._stub.PredictStream(request, timeout=timeout or self.timeout)
        index = 0
        try:
            async for message in call:
                yield stream_event_of(message, index)
                index += 1
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def list_models(self) -> list[pb.ModelStatus]:
        try:
            response = await self._stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return list(response.models)

    async def metadata(self, model: str) -> pb.GetModelMetadataResponse:
        try:
            request = pb.GetModelMetadataRequest(model=model)
            return await self._stub.GetModelMetadata(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
