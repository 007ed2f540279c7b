"""Tokens and mTLS identities at the edge of real servers on 127.0.0.1: admin RPCs need the
admin role, Predict needs a serving token once serving tokens are set, health stays open,
and no token reaches a log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.channels import bearer
from modelyard.client import AsyncClient
from modelyard.errors import ModelyardError
from modelyard.v1 import composer_pb2, composer_pb2_grpc, controlplane_pb2_grpc
from modelyard.v1 import controlplane_pb2 as cp
from modelyard_cli import cluster
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.mistakes import Mistake
from modelyard_server.auth import AuthSettings, Role
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.integration.tls_certs import Authority, make_ca
from workers.server import Worker

ADMIN = "admin-token-3f9a1c"
SERVING = "serving-token-77be02"
TOKENS = AuthSettings.model_validate({"admin_tokens": [ADMIN], "serving_tokens": [SERVING]})
ECHO = [{"name": "echo", "class": "tests.support.models:Echo"}]
GRAPH = graph_from_dict(
    {
        "name": "g",
        "inputs": {"x": "int"},
        "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}],
        "outputs": {"x": "a.x"},
    }
)


@dataclass
class Stack:
    plane: ControlPlane
    worker: Worker
    composer: Composer


@pytest_asyncio.fixture
async def stack(etcd: EtcdServer) -> AsyncIterator[Stack]:
    """Every service checking the same tokens; the composer sends the serving token on."""
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings(), auth=TOKENS))
    await plane.start()
    async with running_worker(ECHO, etcd=etcd.settings(), lease_ttl=2.0, auth=TOKENS) as worker:
        outgoing = AuthSettings.model_validate({**TOKENS.model_dump(), "token": SERVING})
        composer = Composer(
            ComposerSettings(
                port=0, etcd=etcd.settings(), controlplanes=[plane.address], auth=outgoing
            )
        )
        await composer.start()
        try:
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            yield Stack(plane, worker, composer)
        finally:
            await composer.stop()
    await plane.stop()


def credentials_of(token: str | None) -> tuple[tuple[str, str], ...]:
    return bearer(token) if token else ()


async def drain(stack: Stack, token: str | None) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(stack.plane.address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        request = cp.DrainWorkerRequest(worker_id=stack.worker.worker_id)
        try:
            await stub.DrainWorker(request, metadata=credentials_of(token), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def until_registered(stack: Stack) -> None:
    """Until the control plane has read etcd and lists the worker."""
    async with asyncio.timeout(30):
        await stack.plane.synced.wait()
        while stack.plane.view.registration(stack.worker.worker_id) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("not-a-token-anyone-issued", grpc.StatusCode.UNAUTHENTICATED),
        (SERVING, grpc.StatusCode.PERMISSION_DENIED),
        (ADMIN, grpc.StatusCode.OK),
    ],
)
async def test_drain_needs_the_admin_token(
    stack: Stack, token: str | None, expected: grpc.StatusCode
) -> None:
    await until_registered(stack)
    assert await drain(stack, token) == expected


async def composer_admin(stack: Stack, token: str | None) -> list[grpc.StatusCode]:
    """The codes of a DeployGraph and then a DeleteGraph sent with `token`."""
    metadata = credentials_of(token)
    async with grpc.aio.insecure_channel(stack.composer.address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        deployed = await code_of(
            stub.DeployGraph(
                composer_pb2.DeployGraphRequest(graph=GRAPH), metadata=metadata, timeout=30
            )
        )
        async with asyncio.timeout(30):  # the composer deletes graphs it has read from etcd
            while deployed == grpc.StatusCode.OK and "g" not in await graphs(stub):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        deleted = await code_of(
            stub.DeleteGraph(
                composer_pb2.DeleteGraphRequest(name="g"), metadata=metadata, timeout=30
            )
        )
        return [deployed, deleted]


async def graphs(stub: composer_pb2_grpc.ComposerAsyncStub) -> set[str]:
    reply = await stub.ListGraphs(composer_pb2.ListGraphsRequest(), timeout=10)
    return {graph.name for graph in reply.graphs}


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (SERVING, grpc.StatusCode.PERMISSION_DENIED),
        (ADMIN, grpc.StatusCode.OK),
    ],
)
async def test_deploy_and_delete_need_the_admin_token(
    stack: Stack, token: str | None, expected: grpc.StatusCode
) -> None:
    assert await composer_admin(stack, token) == [expected, expected]


async def test_predict_needs_a_serving_token_once_serving_tokens_are_set(stack: Stack) -> None:
    address = stack.worker.address
    async with AsyncClient(address, timeout=10) as anonymous:
        with pytest.raises(ModelyardError) as refused:
            await anonymous.predict("echo", x=1)
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    for token in (SERVING, ADMIN):
        async with AsyncClient(address, timeout=10, token=token) as client:
            assert (await client.predict("echo", x=1)).outputs == {"x": 1}
    async with grpc.aio.insecure_channel(address) as channel:  # health stays open
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_composer_run_carries_its_own_serving_token_to_the_workers(stack: Stack) -> None:
    await until_registered(stack)
    async with grpc.aio.insecure_channel(stack.composer.address) as channel:
        stub = composer_pb2_grpc.ComposerStub(channel)
        admin = bearer(ADMIN)
        await stub.DeployGraph(composer_pb2.DeployGraphRequest(graph=GRAPH), metadata=admin)
        async with asyncio.timeout(30):
            while "g" not in await graphs(stub):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        request = composer_pb2.RunRequest(name="g")
        request.inputs["x"].int_value = 5
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Run(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.Run(request, metadata=bearer(SERVING), timeout=30)
        assert reply.outputs["x"].int_value == 5


async def test_no_token_reaches_the_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await until_registered(stack)
    for token in (None, "wrong-token-5d1e", SERVING, ADMIN):
        await drain(stack, token)
        await composer_admin(stack, token)
    logged = caplog.text + repr(stack.plane.settings) + str(stack.composer.settings)
    assert "refused /modelyard.v1.ControlPlane/DrainWorker" in caplog.text  # refusals logged
    for secret in (ADMIN, SERVING, "wrong-token-5d1e"):
        assert secret not in logged


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return make_ca(tmp_path)


async def test_an_admin_certificate_drains_and_another_certificate_may_not(
    ca: Authority, etcd: EtcdServer
) -> None:
    auth = AuthSettings(admin_identities=["ops-admin"])
    plane = ControlPlane(
        ControlPlaneSettings(
            port=0, etcd=etcd.settings(), tls=ca.server_tls(client_auth=True), auth=auth
        )
    )
    await plane.start()
    try:
        await asyncio.wait_for(plane.synced.wait(), 30)  # else drains are UNAVAILABLE
        request = cp.DrainWorkerRequest(worker_id="nobody")
        for name, expected in (
            ("ops-admin", grpc.StatusCode.NOT_FOUND),  # let through: no such worker
            ("someone-else", grpc.StatusCode.PERMISSION_DENIED),
        ):
            credentials = ca.credentials(ca.issue(name))
            async with grpc.aio.secure_channel(plane.address, credentials) as channel:
                stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.DrainWorker(request, timeout=10)
                assert caught.value.code() == expected, name
    finally:
        await plane.stop()


def test_tokens_read_from_a_file_count_and_are_never_shown(tmp_path: Path) -> None:
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"# rotated monthly\n{ADMIN}\n\n")
    settings = AuthSettings.model_validate({"admin_tokens_file": tokens, "token": SERVING})
    assert settings.tokens(Role.ADMIN) == [ADMIN.encode()]
    assert settings.outgoing_token() == SERVING
    assert SERVING not in repr(settings) and SERVING not in settings.model_dump_json()


async def test_the_cli_sends_the_token_from_modelyard_token(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await until_registered(stack)
    worker_id, address = stack.worker.worker_id, stack.plane.address
    with pytest.raises(Mistake) as refused:
        await asyncio.to_thread(cluster.drain, worker_id, address)
    assert "UNAUTHENTICATED" in str(refused.value)
    monkeypatch.setenv("MODELYARD_TOKEN", ADMIN)
    await asyncio.to_thread(cluster.drain, worker_id, address)
    await eventually(lambda: stack.worker.service.draining, timeout=30)  # it took effect


async def test_a_control_plane_without_admin_credentials_warns_at_its_first_admin_call(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    try:
        await asyncio.wait_for(plane.synced.wait(), 30)  # else drains are UNAVAILABLE
        assert "admin RPCs are open" not in caplog.text
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.DrainWorker(cp.DrainWorkerRequest(worker_id="nobody"), timeout=10)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # let through
    finally:
        await plane.stop()
    assert caplog.text.count("admin RPCs are open to any caller") == 1
