"""TLS on every hop, through real servers on 127.0.0.1: a client with the stack's CA talks
to a worker, a composer and a control plane; the composer's and control plane's own
channels (to workers and control planes) use TLS too; plaintext and a missing client
certificate are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.client import AsyncClient
from modelyard.composer_client import AsyncComposerClient
from modelyard.errors import Unavailable
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from tests.integration.conftest import running_worker
from tests.integration.tls_certs import Authority, make_ca

ECHO = [{"name": "echo", "class": "tests.support.models:Echo"}]
CHAIN = {
    "name": "chain",
    "inputs": {"x": "int"},
    "nodes": [{"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return make_ca(tmp_path)


async def echo(
    address: str, credentials: grpc.ChannelCredentials | None = None, x: int = 1
) -> dict[str, object]:
    async with AsyncClient(address, credentials=credentials, timeout=10) as client:
        return (await client.predict("echo", x=x)).outputs


async def test_a_client_with_the_ca_talks_to_a_tls_worker(ca: Authority) -> None:
    async with running_worker(ECHO, tls=ca.server_tls()) as worker:
        assert await echo(worker.address, ca.credentials()) == {"x": 1}


async def test_a_plaintext_client_of_a_tls_worker_gets_unavailable(ca: Authority) -> None:
    async with running_worker(ECHO, tls=ca.server_tls()) as worker:
        with pytest.raises(Unavailable):
            await echo(worker.address)


async def test_a_client_that_does_not_trust_the_ca_gets_unavailable(
    ca: Authority, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    stranger = make_ca(tmp_path / "other")
    async with running_worker(ECHO, tls=ca.server_tls()) as worker:
        with pytest.raises(Unavailable):
            await echo(worker.address, stranger.credentials())


async def test_mutual_tls_refuses_a_client_without_a_certificate_and_takes_one_with(
    ca: Authority,
) -> None:
    async with running_worker(ECHO, tls=ca.server_tls(client_auth=True)) as worker:
        with pytest.raises(Unavailable):
            await echo(worker.address, ca.credentials())
        signed = ca.credentials(ca.issue("some-client"))
        assert await echo(worker.address, signed, x=2) == {"x": 2}


@pytest_asyncio.fixture
async def mtls_stack(ca: Authority, etcd: EtcdServer) -> AsyncIterator[tuple[ControlPlane, str]]:
    """A control plane, a worker and a composer, each requiring client certificates: the
    control plane probes and follows the worker over TLS, the composer watches the control
    plane and calls the worker over TLS. Yields the control plane and the composer's
    address."""
    plane = ControlPlane(
        ControlPlaneSettings(
            port=0, etcd=etcd.settings(), tls=ca.server_tls("controlplane", client_auth=True)
        )
    )
    await plane.start()
    worker_tls = ca.server_tls("worker", client_auth=True)
    async with running_worker(ECHO, etcd=etcd.settings(), lease_ttl=2.0, tls=worker_tls):
        composer = Composer(
            ComposerSettings(
                port=0,
                etcd=etcd.settings(),
                controlplanes=[plane.address],
                tls=ca.server_tls("composer", client_auth=True),
            )
        )
        await composer.start()
        try:
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            yield plane, composer.address
        finally:
            await composer.stop()
    await plane.stop()


async def test_every_hop_of_a_run_goes_over_mutual_tls(
    ca: Authority, mtls_stack: tuple[ControlPlane, str]
) -> None:
    plane, composer_address = mtls_stack
    credentials = ca.credentials(ca.issue("user"))
    async with grpc.aio.secure_channel(plane.address, credentials) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)

        async def echo_served() -> bool:
            reply = await stub.ListWorkers(cp.ListWorkersRequest(), timeout=10)
            return any(m.model == "echo" and m.serving for w in reply.workers for m in w.models)

        # SERVING only once the control plane's probe reached the worker over TLS
        async with asyncio.timeout(30):
            while not await echo_served():  # noqa: ASYNC110 (polls over gRPC)
                await asyncio.sleep(0.05)
    async with AsyncComposerClient(
        composer_address, credentials=credentials, timeout=30
    ) as composer:
        await composer.deploy(CHAIN)
        # the run reaches the worker only over the composer's own TLS channels
        assert (await composer.run("chain", x=7)).outputs == {"x": 7}
