"""The services against a real etcd that requires TLS, client certificates or a password,
through nothing but EtcdSettings: a worker registers, the control plane lists it, a graph
deploys and runs. A restarted etcd (which forgets every auth token) loses nobody, and a
wrong CA or a missing client certificate says what to change instead of hanging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
import pytest_asyncio
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.v1 import composer_pb2, composer_pb2_grpc, controlplane_pb2_grpc
from modelyard.v1 import controlplane_pb2 as cp_pb
from modelyard.values import fill_value_map, from_value_map
from modelyard_cli.etcd_server import EtcdServer, EtcdTls, EtcdUser
from modelyard_server.etcd import EtcdSettings
from tests.helpers import eventually
from tests.integration.conftest import running_worker

ECHO = [{"name": "echo", "class": "tests.support.models:Echo"}]
GRAPH = {
    "name": "twice",
    "inputs": {"x": "int"},
    "nodes": [
        {"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}},
        {"name": "b", "model": "echo", "inputs": {"x": "a.x"}},
    ],
    "outputs": {"x": "b.x"},
}
#: a user that, as in production, may touch only modelyard's prefix
APP_USER = EtcdUser("modelyard", "correct-horse-battery-staple")
#: generous: a busy host is slow, not wrong
PATIENCE = 20.0


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here

    def tls(self, *, client_cert_auth: bool = True) -> EtcdTls:
        return EtcdTls(
            ca_file=self.ca,
            cert_file=self.server_cert,
            key_file=self.server_key,
            client_cert_file=self.client_cert,
            client_key_file=self.client_key,
            client_cert_auth=client_cert_auth,
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("modelyard-client")
    files = Certificates(*(folder / n for n in ("ca", "s.crt", "s.key", "c.crt", "c.key", "x")))
    ca.cert_pem.write_to_path(files.ca)
    other.cert_pem.write_to_path(files.other_ca)
    server.cert_chain_pems[0].write_to_path(files.server_cert)
    server.private_key_pem.write_to_path(files.server_key)
    client.cert_chain_pems[0].write_to_path(files.client_cert)
    client.private_key_pem.write_to_path(files.client_key)
    return files


@pytest.fixture(params=["mutual TLS", "password", "mutual TLS and password"])
def secured_etcd(request: pytest.FixtureRequest, certs: Certificates) -> Iterator[EtcdServer]:
    tls = certs.tls() if "TLS" in request.param else None
    user = APP_USER if "password" in request.param else None
    with EtcdServer(tls=tls, user=user) as server:
        yield server


@pytest_asyncio.fixture
async def control_plane_on(secured_etcd: EtcdServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=secured_etcd.settings()))
    await plane.start()
    yield plane
    await plane.stop()


async def listed_workers(address: str) -> list[str] | None:
    """The ids the control plane lists; None while it has not read etcd yet."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        try:
            reply = await stub.ListWorkers(cp_pb.ListWorkersRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None
        return sorted(w.worker_id for w in reply.workers)


async def until_listed(address: str, ids: list[str]) -> None:
    latest: list[str] | None = None
    try:
        async with asyncio.timeout(PATIENCE):
            while (latest := await listed_workers(address)) != ids:  # noqa: ASYNC110 (over gRPC)
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"the control plane lists {latest}, not {ids}, after {PATIENCE} s")


async def deploy_and_run(settings: EtcdSettings, control_plane: str) -> None:
    composer = Composer(ComposerSettings(port=0, etcd=settings, controlplanes=[control_plane]))
    await composer.start()
    try:
        await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
        assert await composer.routed.wait_for_endpoints("echo", timeout=PATIENCE)
        async with grpc.aio.insecure_channel(composer.address) as channel:
            stub = composer_pb2_grpc.ComposerStub(channel)
            graph = graph_from_dict(GRAPH)
            await stub.DeployGraph(composer_pb2.DeployGraphRequest(graph=graph), timeout=10)
            request = composer_pb2.RunRequest(name="twice")
            fill_value_map(request.inputs, {"x": 7})
            result = await stub.Run(request, timeout=10)
            assert from_value_map(result.outputs) == {"x": 7}
            listed = await stub.ListGraphs(composer_pb2.ListGraphsRequest(), timeout=5)
            assert [g.name for g in listed.graphs] == ["twice"]  # read back through etcd
    finally:
        await composer.stop()


async def test_a_worker_registers_the_control_plane_lists_it_and_a_graph_deploys(
    secured_etcd: EtcdServer, control_plane_on: ControlPlane
) -> None:
    settings = secured_etcd.settings()
    async with running_worker(ECHO, etcd=settings, worker_id="secured", lease_ttl=2.0):
        await until_listed(control_plane_on.address, ["secured"])
        await deploy_and_run(settings, control_plane_on.address)
    if secured_etcd.user is not None:  # the app user wrote only under its prefix
        keys = secured_etcd.etcdctl("get", "", "--from-key", "--keys-only")
        assert all(k.startswith("/modelyard/") for k in keys.split())


async def test_a_restarted_etcd_forgets_its_tokens_and_nobody_is_lost(
    certs: Certificates,
) -> None:
    # etcd keeps auth tokens in memory: after a restart every token the services hold is
    # refused ("invalid auth token") and they must authenticate again by themselves
    with EtcdServer(tls=certs.tls(), user=APP_USER) as etcd:
        settings = etcd.settings()
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=settings))
        await plane.start()
        try:
            async with running_worker(ECHO, etcd=settings, worker_id="before", lease_ttl=2.0):
                await until_listed(plane.address, ["before"])
                etcd.restart()
                # a worker that registers now is seen only through a new watch and listing
                async with running_worker(ECHO, etcd=settings, worker_id="after", lease_ttl=2.0):
                    await until_listed(plane.address, ["after", "before"])
                    await deploy_and_run(settings, plane.address)
        finally:
            await plane.stop()


@pytest.mark.parametrize(
    ("mistake", "hint"),
    [
        ("wrong CA", "etcd's certificate is not signed by etcd.ca_file"),
        ("no client certificate", "etcd refused this client's certificate or got none"),
    ],
)
async def test_a_tls_mistake_says_what_to_change_and_nothing_hangs(
    certs: Certificates, mistake: str, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with EtcdServer(tls=certs.tls()) as etcd:
        good = etcd.settings()
        if mistake == "wrong CA":
            settings = good.model_copy(update={"ca_file": certs.other_ca})
        else:
            settings = good.model_copy(update={"cert_file": None, "key_file": None})
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=settings))
        await plane.start()  # serves at once (NOT_SERVING), retrying etcd behind
        try:
            async with running_worker(ECHO, etcd=settings, worker_id="w", lease_ttl=2.0) as w:
                await eventually(lambda: _logged(caplog, "informer on", hint), PATIENCE)
                await eventually(lambda: _logged(caplog, "not registered in etcd", hint), PATIENCE)
                assert (
                    await _health(plane.address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
                )
                registration = await _health(w.address, "modelyard.v1.Registration")
                assert registration == health_pb2.HealthCheckResponse.NOT_SERVING
                assert await _health(w.address, "") == health_pb2.HealthCheckResponse.SERVING
        finally:
            await plane.stop()


def _logged(caplog: pytest.LogCaptureFixture, start: str, hint: str) -> bool:
    return any(start in r.getMessage() and hint in r.getMessage() for r in caplog.records)


async def _health(
    address: str, service: str
) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status


async def test_a_follower_whose_token_expired_still_takes_over() -> None:
    # etcd forgets a token unused for --auth-token-ttl (5 min by default; 1 s here). A
    # follower opened its watch stream with a token that is stale by the time it watches
    # the election key again: etcd refuses that watch, and the follower must notice (and
    # watch on a fresh stream) or it would never see the leader leave.
    with EtcdServer(user=APP_USER, auth_token_ttl=1) as etcd:
        planes = [
            ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings())) for _ in range(3)
        ]
        for plane in planes:
            await plane.start()
        try:
            for _ in range(2):  # the second hand-over is to a replica that watched late
                await eventually(lambda: sum(p.is_leader() for p in planes) == 1, PATIENCE)
                await asyncio.sleep(3.0)  # idle for three token lifetimes
                leader = next(p for p in planes if p.is_leader())
                await leader.stop()
                planes.remove(leader)
            await eventually(lambda: planes[0].is_leader(), PATIENCE)
        finally:
            for plane in planes:
                await plane.stop()
