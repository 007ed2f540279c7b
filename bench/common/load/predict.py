"""`predict`: Predict of one worker over `channels` connections, as raw bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from bench.common.load.spec import LoadSpec
from bench.common.load.target import Call, RawCall, Target, check_outputs
from modelyard.v1 import predict_pb2 as pb
from modelyard.values import fill_value_map, from_value_map

PREDICT = "/modelyard.v1.Predict/Predict"


def payloads(spec: LoadSpec) -> list[bytes]:
    """One serialised request per distinct input."""
    out = []
    for inputs in spec.inputs:
        request = pb.PredictRequest(model=spec.model)
        fill_value_map(request.inputs, inputs)
        fill_value_map(request.parameters, spec.parameters)
        out.append(request.SerializeToString())
    return out


async def open_predict(spec: LoadSpec) -> Target:
    options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
    channels = [
        grpc.aio.insecure_channel(spec.address, options=options) for _ in range(spec.channels)
    ]
    raws: list[RawCall] = [channel.unary_unary(PREDICT) for channel in channels]
    requests = payloads(spec)

    def on(raw: RawCall) -> Call:
        async def call(sequence: int) -> None:
            await raw(requests[sequence % len(requests)], timeout=spec.deadline_s)

        return call

    async def check() -> dict[str, Any]:
        """Parses one response per distinct request."""
        for request, inputs in zip(requests, spec.inputs, strict=True):
            reply = pb.PredictResponse.FromString(await raws[0](request, timeout=spec.deadline_s))
            echo_of = inputs if spec.expect_echo else None
            check_outputs(from_value_map(reply.outputs), spec.expect, echo_of)
        return {}

    async def close() -> None:
        await asyncio.gather(*(channel.close() for channel in channels))

    return Target([on(raw) for raw in raws], check, close)
