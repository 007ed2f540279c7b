"""Model calls for the engine, through the routed client: a replica per call from the
control plane's endpoint sets, retried on UNAVAILABLE before the first response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc.aio

from modelyard.client import Prediction, StreamEvent
from modelyard.routed_client import RoutedClient
from modelyard.v1 import predict_pb2, predict_pb2_grpc


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
    ) -> Prediction:
        return await self._client.predict(
            model, inputs, parameters=parameters, selector=selector or None, timeout=timeout
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


async def fetch_metadata(
    client: RoutedClient, models: Iterable[str], *, wait: float = 1.0
) -> dict[str, predict_pb2.GetModelMetadataResponse]:
    """GetModelMetadata of each model from one of its replicas; models nobody serves
    (within `wait` seconds) are left out, which validation reports as a warning."""

    async def one(model: str) -> tuple[str, predict_pb2.GetModelMetadataResponse | None]:
        with contextlib.suppress(Exception):
            endpoints = await client.wait_for_endpoints(model, timeout=wait)
            if endpoints:
                async with grpc.aio.insecure_channel(endpoints[0].address) as channel:
                    stub = predict_pb2_grpc.PredictStub(channel)
                    request = predict_pb2.GetModelMetadataRequest(model=model)
                    return model, await stub.GetModelMetadata(request, timeout=wait)
        return model, None

    found = await asyncio.gather(*(one(model) for model in set(models)))
    return {model: meta for model, meta in found if meta is not None}
