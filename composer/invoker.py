"""Model calls for the engine, through the routed client: a replica per call from the
control plane's endpoint sets, retried on UNAVAILABLE before the first response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc.aio

from composer.validation import Unchecked
from modelyard.channels import aio_channel
from modelyard.client import Prediction, StreamEvent
from modelyard.routed_client import RoutedClient
from modelyard.v1 import controlplane_pb2, controlplane_pb2_grpc, predict_pb2, predict_pb2_grpc
from modelyard_server.http_api import signature as http_api_signature


class RoutedInvoker:
    def __init__(self, client: RoutedClient) -> None:
        self._client = client

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        selector: str,
        timeout: float | None,
        hedge_after: float | None = None,
    ) -> Prediction:
        return await self._client.predict(
            model,
            inputs,
            parameters=parameters,
            selector=selector or None,
            timeout=timeout,
            hedge_after=hedge_after,
        )

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        selector: str,
        timeout: float | None,
    ) -> AsyncIterator[StreamEvent]:
        return self._client.predict_stream(
            model, inputs, parameters=parameters, selector=selector or None, timeout=timeout
        )


Described = predict_pb2.GetModelMetadataResponse | Unchecked


async def fetch_metadata(
    client: RoutedClient, models: Iterable[str], *, wait: float = 1.0
) -> dict[str, Described]:
    """GetModelMetadata of each model from one of its workers; a model only registered
    third-party APIs serve has their one signature (`http_api.signature`). Models nobody
    serves (within `wait` seconds) are left out; a served model whose description could not
    be fetched maps to `Unchecked` saying why, so validation does not call it unserved."""

    async def one(model: str) -> tuple[str, Described | None]:
        endpoints = await client.wait_for_endpoints(model, timeout=wait)
        if not endpoints:
            return model, None
        workers = [e for e in endpoints if e.http_api is None]
        if not workers:  # only registered APIs serve it: no worker to ask, nor gRPC to speak
            return model, http_api_signature.describe(model)
        try:
            channel = aio_channel(
                workers[0].address,
                credentials=client.credentials,
                interceptors=client.interceptors,
            )
            async with channel:
                stub = predict_pb2_grpc.PredictStub(channel)
                request = predict_pb2.GetModelMetadataRequest(model=model)
                return model, await stub.GetModelMetadata(request, timeout=wait)
        except grpc.aio.AioRpcError as error:
            where = workers[0].worker_id
            return model, Unchecked(f"{where} answered {error.code().name}: {error.details()}")

    found = await asyncio.gather(*(one(model) for model in set(models)))
    return {model: meta for model, meta in found if meta is not None}


async def served_models(client: RoutedClient, *, wait: float = 1.0) -> set[str]:
    """Every model some registered worker serves, from the first control plane that answers
    within `wait` seconds; empty when none does (it only feeds validation's did-you-mean)."""
    request = controlplane_pb2.ListWorkersRequest()
    for address in client.addresses:
        channel = aio_channel(
            address, credentials=client.credentials, interceptors=client.interceptors
        )
        try:
            async with channel:
                stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
                reply = await stub.ListWorkers(request, timeout=wait)
        except grpc.aio.AioRpcError:
            continue
        return {m.model for worker in reply.workers for m in worker.models if m.serving}
    return set()


def lookup(found: Mapping[str, Described]) -> Callable[[str], Any]:
    """The `metadata` callable validation takes, over what `fetch_metadata` found."""

    def metadata(model: str) -> predict_pb2.GetModelMetadataResponse | None:
        described = found.get(model)
        if isinstance(described, Unchecked):
            raise described
        return described

    return metadata
