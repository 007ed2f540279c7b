"""Admission control and message limits at a real composer (etcd, control plane, a worker
whose model waits at a gate): past `max_runs_in_flight` a run is refused at once with
RESOURCE_EXHAUSTED and a retry hint, places come back however runs end, and a run larger
than the workers take is refused before the composer holds it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import psutil
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from modelyard_cli.etcd_server import EtcdServer
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from workers.settings import WorkerSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 2
RUN = "/modelyard.v1.Composer/Run"
HELD = {
    "name": "held",
    "inputs": {"x": "string"},
    "nodes": [{"name": "a", "model": "gated", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}
QUICK = {
    "name": "quick",
    "inputs": {"x": "string"},
    "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}


@dataclass
class Stack:
    composer: Composer
    stub: composer_pb2_grpc.ComposerAsyncStub
    health: health_pb2_grpc.HealthStub
    gate: Gate


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    gate = Gate(tmp_path_factory.mktemp("admission") / "open")
    models: list[dict[str, Any]] = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {
            "name": "gated",
            "class": "tests.support.models:Gated",
            "options": {"predict_gate": str(gate)},
        },
    ]
    with EtcdServer() as etcd:
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
        await plane.start()
        async with running_worker(models, etcd=etcd.settings(), lease_ttl=2.0):
            composer = Composer(
                ComposerSettings(
                    port=0,
                    etcd=etcd.settings(),
                    controlplanes=[plane.address],
                    max_runs_in_flight=LIMIT,
                )
            )
            await composer.start()
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            channel = grpc.aio.insecure_channel(
                composer.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
            )
            stub = composer_pb2_grpc.ComposerStub(channel)
            try:
                for model in ("echo", "gated"):
                    assert await composer.routed.wait_for_endpoints(model, timeout=60)
                for graph in (HELD, QUICK):
                    await stub.DeployGraph(pb.DeployGraphRequest(graph=graph_from_dict(graph)))
                yield Stack(composer, stub, health_pb2_grpc.HealthStub(channel), gate)
            finally:
                gate.open()  # a failed test must not leave the worker's model thread waiting
                await channel.close()
                await composer.stop()
        await plane.stop()


def _run(graph: str, x: str = "hi") -> pb.RunRequest:
    request = pb.RunRequest(name=graph)
    fill_value_map(request.inputs, {"x": x})
    return request


def _stream(graph: str) -> pb.RunStreamRequest:
    request = pb.RunStreamRequest(name=graph)
    fill_value_map(request.inputs, {"x": "hi"})
    return request


async def _in_flight_becomes(composer: Composer, count: int) -> None:
    for _ in range(600):
        if composer.admission.in_flight == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{composer.admission.in_flight} runs in flight, not {count}")


async def _refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _stream_refusal(stack: Stack) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.RunStream(_stream("quick"), timeout=30).read()
    return caught.value


async def test_cancelled_and_failed_runs_give_their_place_back(stack: Stack) -> None:
    held = stack.stub.Run(_run("held"), timeout=120)
    await _in_flight_becomes(stack.composer, 1)
    held.cancel()
    await _in_flight_becomes(stack.composer, 0)

    streamed = stack.stub.RunStream(_stream("held"), timeout=120)
    await _in_flight_becomes(stack.composer, 1)
    streamed.cancel()
    await _in_flight_becomes(stack.composer, 0)

    # a run that fails: an inline graph on a model nobody serves
    nobody = {**QUICK, "nodes": [{"name": "a", "model": "nobody", "inputs": {"x": "inputs.x"}}]}
    failing = pb.RunRequest(graph=graph_from_dict(nobody))
    fill_value_map(failing.inputs, {"x": "hi"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Run(failing, timeout=60)
    assert caught.value.code() is not grpc.StatusCode.OK
    assert stack.composer.admission.in_flight == 0


async def test_past_the_limit_a_run_is_refused_at_once_with_a_retry_hint(stack: Stack) -> None:
    held_run = stack.stub.Run(_run("held"), timeout=120)
    held_stream = stack.stub.RunStream(_stream("held"), timeout=120)
    await _in_flight_becomes(stack.composer, LIMIT)

    for refused in (_refusal(stack.stub.Run(_run("quick"), timeout=30)), _stream_refusal(stack)):
        error = await refused
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # not left to wait
        assert (error.details() or "").startswith(
            f"the composer is at its limit of {LIMIT} runs in flight; retry in ~"
        )
        trailers = dict(error.trailing_metadata() or ())
        assert int(trailers["grpc-retry-pushback-ms"]) > 0

    # health checks are not runs: still answered
    reply = await stack.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    stack.gate.open()
    result = await held_run
    assert from_value_map(result.outputs) == {"x": "hi"}
    last = [message async for message in held_stream][-1]
    assert from_value_map(last.result.outputs) == {"x": "hi"}
    await _in_flight_becomes(stack.composer, 0)

    after = await stack.stub.Run(_run("quick", "after"), timeout=60)
    assert from_value_map(after.outputs) == {"x": "after"}


async def test_a_run_larger_than_the_workers_take_is_refused_before_it_is_held(
    stack: Stack,
) -> None:
    # what no worker would take, the composer does not buffer and forward either
    assert stack.composer.settings.max_message_bytes <= WorkerSettings().max_message_bytes
    oversize = _run("quick", "x" * 20_000_000).SerializeToString()
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    channel = grpc.aio.insecure_channel(stack.composer.address, options=options)
    run: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(RUN)
    process = psutil.Process(os.getpid())  # the composer runs in this process (the client too)
    for attempt in range(4):
        if attempt == 1:  # after the client's own first-call allocations
            before = process.memory_info().rss
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await run(oversize, timeout=60)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    grown = process.memory_info().rss - before
    await channel.close()
    # generous (the client shares the process); with the old 64 MiB limit it grew ~280 MB
    assert grown < 60_000_000, f"RSS grew {grown} bytes over three 20 MB runs"
    after = await stack.stub.Run(_run("quick", "after"), timeout=60)
    assert from_value_map(after.outputs) == {"x": "after"}
