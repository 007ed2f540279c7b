"""`predict`: Predict of one worker over `channels` connections, as raw bytes.
`predict_stream`: its PredictStream, timed to the first message (a chunk, or the result of
a model that sends no chunks), and it must end with a result."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc.aio

from bench.common.load.spec import LoadSpec
from bench.common.load.target import Call, RawCall, Target, check_outputs
from modelyard.v1 import predict_pb2 as pb
from modelyard.values import fill_value_map, from_value_map

PREDICT = "/modelyard.v1.Predict/Predict"
PREDICT_STREAM = "/modelyard.v1.Predict/PredictStream"


def payloads(spec: LoadSpec, message: type[Any] = pb.PredictRequest) -> list[bytes]:
    """One serialised request per distinct input."""
    out = []
    for inputs in spec.inputs:
        request = message(model=spec.model)
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


async def open_predict_stream(spec: LoadSpec) -> Target:
    channel = grpc.aio.insecure_channel(spec.address)
    raw: RawCall = channel.unary_stream(PREDICT_STREAM)
    requests = payloads(spec, pb.PredictStreamRequest)

    async def call(sequence: int) -> int:
        first = 0
        last = b""
        async for message in raw(requests[sequence % len(requests)], timeout=spec.deadline_s):
            first = first or time.perf_counter_ns()
            last = message
        if pb.PredictStreamResponse.FromString(last).WhichOneof("event") != "result":
            raise AssertionError("a stream that did not end with its result")
        return first

    async def check() -> dict[str, Any]:
        """Reads one stream per distinct request; keeps the first one's chunk count."""
        counts = []
        for request in requests:
            chunks, outputs = 0, {}
            async for message in raw(request, timeout=spec.deadline_s):
                event = pb.PredictStreamResponse.FromString(message)
                if event.WhichOneof("event") == "chunk":
                    chunks += 1
                else:
                    outputs = from_value_map(event.result.outputs)
            check_outputs(outputs, spec.expect)
            counts.append(chunks)
        return {"chunks": counts[0]}

    return Target([call], check, channel.close)
