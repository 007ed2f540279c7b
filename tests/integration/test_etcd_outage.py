"""Admin calls while etcd is down: UNAVAILABLE with a message that says etcd did not take
the write and to retry, within the write's wait; never INTERNAL. And once etcd is back,
the same calls succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import grpc.aio
import pytest

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.v1 import composer_pb2, composer_pb2_grpc, controlplane_pb2_grpc
from modelyard.v1 import controlplane_pb2 as cp_pb
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd_writes import WITHIN
from tests.helpers import EndpointFollower
from tests.integration.conftest import running_worker

ECHO = [{"name": "echo", "class": "tests.support.models:Echo"}]
GRAPH = {
    "name": "g",
    "inputs": {"x": "int"},
    "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}


async def test_admin_writes_while_etcd_is_down_are_unavailable_then_work_again(
    etcd: EtcdServer,
) -> None:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    composer = Composer(
        ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
    )
    await composer.start()
    try:
        await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
        async with (
            running_worker(ECHO, etcd=etcd.settings(), worker_id="w", lease_ttl=600.0),
            grpc.aio.insecure_channel(plane.address) as plane_channel,
            grpc.aio.insecure_channel(composer.address) as composer_channel,
        ):
            follower = EndpointFollower(plane.address, "echo")
            await follower.until(["w"], timeout=20)  # registered, and known to the plane
            await follower.close()
            control = controlplane_pb2_grpc.ControlPlaneStub(plane_channel)
            graphs = composer_pb2_grpc.ComposerStub(composer_channel)
            drain = cp_pb.DrainWorkerRequest(worker_id="w")
            deploy = composer_pb2.DeployGraphRequest(graph=graph_from_dict(GRAPH))

            etcd.stop()
            await refused(control.DrainWorker(drain, timeout=WITHIN + 10), "drain worker 'w'")
            await refused(graphs.DeployGraph(deploy, timeout=WITHIN + 10), "deploy graph 'g'")

            etcd.start()
            await control.DrainWorker(drain, timeout=WITHIN + 10)
            await graphs.DeployGraph(deploy, timeout=WITHIN + 10)
    finally:
        await composer.stop()
        await plane.stop()


async def refused(call: Awaitable[object], what: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"etcd did not take the write to {what} within" in str(caught.value.details())
