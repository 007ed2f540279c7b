"""The per-hop floor: a bare grpc.aio relay that serves `Composer.Run` of one fixed chain.

For each Run it calls the chain's workers' Predict one after the other, each response's
outputs becoming the next request's inputs, over one channel per worker with the generated
stubs, and answers with the last outputs. Nothing else: no graph, no routing or balancing,
no retries, no interceptors, metrics or tracing, no value decoding (the `Value` messages
pass through as they are), no timeline in the response. The caller's deadline goes on to
every call, as any relay must pass it. What the composer spends beyond this, on the same
workers under the same load, is what modelyard adds over what any grpc.aio relay costs.

    python -m bench.composer.relay_server --graph echo-chain \
        --hop 127.0.0.1:50061 echo1 --hop 127.0.0.1:50062 echo2 --port-file PATH
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from modelyard.v1 import composer_pb2, predict_pb2, predict_pb2_grpc
from modelyard_server.portfile import write_port_file

Context = grpc.aio.ServicerContext[Any, Any]


class Relay:
    """Runs the chain `hops` ((Predict stub, model) each) under the graph name `graph`."""

    def __init__(self, graph: str, hops: Sequence[tuple[predict_pb2_grpc.PredictAsyncStub, str]]):
        self.graph = graph
        self.hops = hops

    async def run(
        self, request: composer_pb2.RunRequest, context: Context
    ) -> composer_pb2.RunResponse:
        if request.name != self.graph:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no graph {request.name!r}")
        outputs = request.inputs
        for stub, model in self.hops:
            call = predict_pb2.PredictRequest(model=model, inputs=outputs)
            outputs = (await stub.Predict(call, timeout=context.time_remaining())).outputs
        return composer_pb2.RunResponse(outputs=outputs)


def run_handler(relay: Relay) -> grpc.GenericRpcHandler:
    """The handler `add_ComposerServicer_to_server` would register for Run alone: same
    method path, same message (de)serialisers."""
    method = grpc.unary_unary_rpc_method_handler(
        relay.run,
        request_deserializer=composer_pb2.RunRequest.FromString,
        response_serializer=composer_pb2.RunResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("modelyard.v1.Composer", {"Run": method})


async def serve(
    host: str, port: int, port_file: Path, graph: str, hops: Sequence[tuple[str, str]]
) -> None:
    channels = {address: grpc.aio.insecure_channel(address) for address, _ in hops}
    stubs = [(predict_pb2_grpc.PredictStub(channels[address]), model) for address, model in hops]
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((run_handler(Relay(graph, stubs)),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    write_port_file(port_file, bound)  # atomically: never half a number
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        await server.stop(grace=1.0)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--graph", required=True, help="the graph name Run answers to")
    parser.add_argument(
        "--hop",
        nargs=2,
        action="append",
        required=True,
        metavar=("ADDRESS", "MODEL"),
        help="a worker's address and the model to call there, in the chain's order",
    )
    args = parser.parse_args()
    hops = [(address, model) for address, model in args.hop]
    asyncio.run(serve(args.host, args.port, args.port_file, args.graph, hops))


if __name__ == "__main__":
    main()
