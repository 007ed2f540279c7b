"""`chain` and `fanout`: the client calls workers itself, without a composer.

chain: one after the other (`hops`: [address, model]), each response's outputs becoming
the next request's inputs (copied as the composer would); fanout: all at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from bench.common.load.spec import LoadSpec
from bench.common.load.target import RawCall, Target, check_outputs
from modelyard.v1 import predict_pb2
from modelyard.values import fill_value_map, from_value_map

PREDICT = "/modelyard.v1.Predict/Predict"


async def open_chain(spec: LoadSpec) -> Target:
    channels: dict[str, grpc.aio.Channel] = {}
    hops: list[tuple[RawCall, str]] = []  # (Predict, model)
    for address, model in spec.hops:
        if address not in channels:
            channels[address] = grpc.aio.insecure_channel(address)
        hops.append((channels[address].unary_unary(PREDICT), model))
    first_requests = []
    for _, model in hops:
        request = predict_pb2.PredictRequest(model=model)
        fill_value_map(request.inputs, spec.inputs[0])
        fill_value_map(request.parameters, spec.parameters)
        first_requests.append(request.SerializeToString())

    async def chain() -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse.FromString(
            await hops[0][0](first_requests[0], timeout=spec.deadline_s)
        )
        for raw, model in hops[1:]:
            request = predict_pb2.PredictRequest(model=model)
            for key, value in response.outputs.items():  # outputs become the next inputs
                request.inputs[key].CopyFrom(value)
            fill_value_map(request.parameters, spec.parameters)
            reply = await raw(request.SerializeToString(), timeout=spec.deadline_s)
            response = predict_pb2.PredictResponse.FromString(reply)
        return response

    async def fanout() -> predict_pb2.PredictResponse:
        calls = zip(hops, first_requests, strict=True)
        replies = await asyncio.gather(
            *(raw(request, timeout=spec.deadline_s) for (raw, _), request in calls)
        )
        return predict_pb2.PredictResponse.FromString(replies[-1])

    run = fanout if spec.kind == "fanout" else chain

    async def call(sequence: int) -> None:
        await run()

    async def check() -> dict[str, Any]:
        return check_outputs(from_value_map((await run()).outputs), spec.expect)

    async def close() -> None:
        await asyncio.gather(*(channel.close() for channel in channels.values()))

    return Target([call], check, close)
