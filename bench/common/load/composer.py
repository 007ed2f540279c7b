"""`run` and `stream`: the composer's Run and RunStream, as raw bytes.

A graph is deployed (`graph`: its name) or sent with every request (`graph_inline`: the
file form, converted once by the client core's `graph_from_dict`). A stream is timed to
the first `chunk` (or the `finished` event) of `node`, and must end with a result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc.aio

from bench.common.load.spec import LoadSpec
from bench.common.load.target import RawCall, Target, check_outputs
from modelyard.graph_spec import graph_from_dict
from modelyard.v1 import composer_pb2
from modelyard.values import fill_value_map, from_value_map

RUN = "/modelyard.v1.Composer/Run"
RUN_STREAM = "/modelyard.v1.Composer/RunStream"


def request_bytes(spec: LoadSpec, message: type[Any]) -> bytes:
    if spec.graph_inline is not None:
        request = message(graph=graph_from_dict(spec.graph_inline))
    else:
        request = message(name=spec.graph)
    fill_value_map(request.inputs, spec.inputs[0])
    return bytes(request.SerializeToString())


def composer_channel(spec: LoadSpec) -> grpc.aio.Channel:
    """Plaintext, or TLS trusting `spec.ca_file` (a `modelyard up --tls` stack's CA)."""
    if not spec.ca_file:
        return grpc.aio.insecure_channel(spec.address)
    trusting = grpc.ssl_channel_credentials(Path(spec.ca_file).read_bytes())
    return grpc.aio.secure_channel(spec.address, trusting)


async def open_run(spec: LoadSpec) -> Target:
    channel = composer_channel(spec)
    raw: RawCall = channel.unary_unary(RUN)
    payload = request_bytes(spec, composer_pb2.RunRequest)

    async def call(sequence: int) -> None:
        await raw(payload, timeout=spec.deadline_s)

    async def check() -> dict[str, Any]:
        reply = composer_pb2.RunResponse.FromString(await raw(payload, timeout=spec.deadline_s))
        return check_outputs(from_value_map(reply.outputs), spec.expect)

    return Target([call], check, channel.close)


async def open_stream(spec: LoadSpec) -> Target:
    channel = composer_channel(spec)
    raw: RawCall = channel.unary_stream(RUN_STREAM)
    payload = request_bytes(spec, composer_pb2.RunStreamRequest)
    want = "chunk" if spec.until == "chunk" else "node_finished"

    async def call(sequence: int) -> int:
        first = 0
        got_result = False
        async for message in raw(payload, timeout=spec.deadline_s):
            event = composer_pb2.RunStreamResponse.FromString(message)
            kind = event.WhichOneof("event")
            if not first and kind == want and getattr(event, want).node == spec.node:
                first = time.perf_counter_ns()
            got_result = kind == "result"
        if not first or not got_result:
            raise AssertionError(f"no {want} of node {spec.node!r}, or no result")
        return first

    async def check() -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        chunks = 0
        async for message in raw(payload, timeout=spec.deadline_s):
            event = composer_pb2.RunStreamResponse.FromString(message)
            if event.WhichOneof("event") == "chunk" and event.chunk.node == spec.node:
                chunks += 1
            if event.WhichOneof("event") == "result":
                outputs = from_value_map(event.result.outputs)
        return {**check_outputs(outputs, spec.expect), f"{spec.node}_chunks": chunks}

    return Target([call], check, channel.close)
