"""A real composer on a real etcd and control plane: graph storage, readiness, validation
against what workers serve, and runs over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.client import AsyncClient
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from modelyard_cli.etcd_server import EtcdServer, free_port
from modelyard_server.etcd import EtcdSettings
from tests.integration.conftest import running_worker
from tests.support.graphs import ECHO_CHAIN as CHAIN

running_worker_address: list[str] = []  # the composer fixture's worker, for direct calls


@pytest_asyncio.fixture
async def composer(etcd: EtcdServer) -> AsyncIterator[Composer]:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "ticker", "class": "tests.support.models:Ticker"},
    ]
    async with running_worker(models, etcd=etcd.settings(), lease_ttl=2.0) as worker:
        running_worker_address[:] = [worker.address]
        running = Composer(
            ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
        )
        await running.start()
        yield running
        await running.stop()
    await plane.stop()


async def test_deploy_list_run_and_delete_a_graph(composer: Composer) -> None:
    async with grpc.aio.insecure_channel(composer.address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        graph = graph_from_dict(CHAIN)
        reply = await stub.DeployGraph(pb.DeployGraphRequest(graph=graph))
        assert list(reply.warnings) == []  # echo is served: its signature was checked
        listed = await stub.ListGraphs(pb.ListGraphsRequest())
        assert [g.name for g in listed.graphs] == ["chain"]
        assert (await stub.GetGraph(pb.GetGraphRequest(name="chain"))).graph == graph
        request = pb.RunRequest(name="chain")
        fill_value_map(request.inputs, {"x": 41})
        result = await stub.Run(request)
        assert from_value_map(result.outputs) == {"x": 41}
        assert [t.node for t in result.timeline] == ["a", "b"]
        await stub.DeleteGraph(pb.DeleteGraphRequest(name="chain"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Run(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_run_stream_sends_each_node_as_it_goes_then_the_result(composer: Composer) -> None:
    assert await composer.routed.wait_for_endpoints("echo", timeout=30)  # registered
    request = pb.RunStreamRequest(graph=graph_from_dict(CHAIN))
    fill_value_map(request.inputs, {"x": 7})
    async with grpc.aio.insecure_channel(composer.address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        replies = [reply async for reply in stub.RunStream(request)]
        events = [(r.WhichOneof("event"), r.node_started.node or r.node_finished.node)
                  for r in replies[:-1]]  # fmt: skip
        assert events == [
            ("node_started", "a"),
            ("node_finished", "a"),
            ("node_started", "b"),
            ("node_finished", "b"),
        ]
        assert replies[-1].WhichOneof("event") == "result"
        assert from_value_map(replies[-1].result.outputs) == {"x": 7}
        unknown = pb.RunStreamRequest(name="nobody-deployed-this")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [reply async for reply in stub.RunStream(unknown)]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_validation_warns_about_models_nobody_serves(composer: Composer) -> None:
    ghost = {**CHAIN, "nodes": [{"name": "a", "model": "ghost", "inputs": {"x": "inputs.x"}}],
             "outputs": {"x": "a.x"}}  # fmt: skip
    async with grpc.aio.insecure_channel(composer.address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        report = await stub.ValidateGraph(pb.ValidateGraphRequest(graph=graph_from_dict(ghost)))
    assert list(report.errors) == []
    assert any("ghost" in warning for warning in report.warnings)


async def test_a_composer_that_has_not_read_etcd_says_unavailable_not_not_found(
    tmp_path: Path,
) -> None:
    unreachable = EtcdSettings(endpoints=[f"127.0.0.1:{free_port()}"])
    port_file = tmp_path / "port"
    running = Composer(
        ComposerSettings(
            port=0, etcd=unreachable, controlplanes=["127.0.0.1:1"], port_file=port_file
        )
    )
    await running.start()
    try:
        # the port file means "ready" (as a worker's): nobody reading it meets this refusal
        assert not port_file.exists()
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = composer_pb2_grpc.ComposerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetGraph(pb.GetGraphRequest(name="chain"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


async def test_a_cancelled_run_stops_the_workers_generation(composer: Composer) -> None:
    # ticker streams 1,000 ticks at 10 ms (10 s) into echo, chunk by chunk
    graph = graph_from_dict(
        {
            "name": "long",
            "inputs": {"n": "int"},
            "nodes": [
                {"name": "gen", "model": "ticker", "inputs": {"count": "inputs.n"}},
                {"name": "each", "model": "echo", "inputs": {"tick": "gen.tick"},
                 "stream": "chunk"},
            ],
            "outputs": {"ticks": "gen.ticks"},
        }
    )  # fmt: skip
    assert await composer.routed.wait_for_endpoints("ticker", timeout=30)  # registered
    request = pb.RunStreamRequest(graph=graph)
    fill_value_map(request.inputs, {"n": 6000})  # a minute of ticks
    async with grpc.aio.insecure_channel(composer.address) as channel:
        call = composer_pb2_grpc.ComposerStub(channel).RunStream(request)
        async for event in call:
            if event.WhichOneof("event") == "chunk" and event.chunk.node == "each":
                break  # the generation is under way and flowing downstream
        call.cancel()
    # The worker runs one stream per model thread: if the generation went on, this call
    # would wait a minute behind it and miss its deadline.
    async with AsyncClient(running_worker_address[0]) as client:
        result = await client.predict("ticker", count=1, timeout=30)
    assert result.outputs == {"ticks": 1}
