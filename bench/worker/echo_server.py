"""The serving-overhead baseline: a bare grpc.aio server with one unary method.

It speaks the worker's own `modelyard.v1.Predict/Predict` (PredictRequest -> PredictResponse)
and only copies inputs to outputs: no interceptors, no value decoding, no signature checks,
no metrics, no thread hop. Whatever the worker spends beyond this is its serving overhead.

    python -m bench.worker.echo_server --port-file PATH   # writes the bound port; SIGTERM stops it
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from modelyard.v1 import predict_pb2 as pb
from modelyard_server.portfile import write_port_file


async def predict(
    request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> pb.PredictResponse:
    # version "0" is what the worker reports for a class-path model, so both servers
    # send byte-identical responses and the comparison measures only the serving path.
    response = pb.PredictResponse(model=request.model, version="0", request_id=request.request_id)
    for key, value in request.inputs.items():
        response.outputs[key].CopyFrom(value)
    return response


def predict_handler() -> grpc.GenericRpcHandler:
    """The handler the generated `add_PredictServicer_to_server` would register for
    Predict alone: same method path, same message (de)serialisers."""
    method = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler("modelyard.v1.Predict", {"Predict": method})


async def serve(host: str, port: int, port_file: Path) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((predict_handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    write_port_file(port_file, bound)  # atomically: never half a number
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
