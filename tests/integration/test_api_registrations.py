"""Registered third-party APIs through a real etcd and a real control plane: a registration
joins its model's endpoint set beside the model's workers, leaves it when taken offline,
removed or failing its health check, and comes back; secrets never reach etcd or a
listing; internal addresses are refused; the admin calls need the admin token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from pydantic import SecretStr

from controlplane.api_prober import ApiProber
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.errors import from_rpc_error
from modelyard.times import duration
from modelyard.v1 import controlplane_pb2 as pb
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.auth import AuthSettings
from modelyard_server.etcd import Keys
from modelyard_server.http_api.record import ApiRecord, RegistrationRecord
from modelyard_server.workerinfo import WorkerHealth
from tests.helpers import EndpointFollower as Watcher
from tests.helpers import eventually
from tests.integration.api_server import ApiServer
from tests.integration.conftest import running_worker
from tests.integration.test_controlplane import ECHO, register

ADMIN = "admin-token-for-registrations"
LOCAL_ONLY = {"allowed_networks": ["127.0.0.1/32"], "health_interval_s": 0.1}
BODY = '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}'


def settings(etcd: EtcdServer, **extra: Any) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        port=0, etcd=etcd.settings(), refresh_seconds=0.2, http_api=LOCAL_ONLY, **extra
    )


@pytest_asyncio.fixture
async def control_plane(etcd: EtcdServer) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(settings(etcd))
    await plane.start()
    yield plane
    await plane.stop()


@pytest_asyncio.fixture
async def stub(
    control_plane: ControlPlane,
) -> AsyncIterator[controlplane_pb2_grpc.ControlPlaneAsyncStub]:
    async with grpc.aio.insecure_channel(control_plane.address) as channel:
        await control_plane.synced.wait()
        yield controlplane_pb2_grpc.ControlPlaneStub(channel)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


def request(url: str, *, model: str = "echo", **api: Any) -> pb.RegisterModelRequest:
    fields: dict[str, Any] = {
        "url_template": f"{url}/v1/answer",
        "body_template": BODY,
        "response_path": "data.items[].attributes.answer",
        "headers": {"Authorization": "Bearer ${ANSWERS_KEY}", "X-Team": "blue"},
        "timeout": duration(10),
        "health_url": f"{url}/health",
        **api,
    }
    return pb.RegisterModelRequest(model=model, owner="team-a", http_api=pb.HttpApi(**fields))


async def listed_until(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub, model: str, count: int
) -> pb.ListRegistrationsResponse:
    """ListRegistrations once it lists `count` registrations of `model`: a listing reads
    the replica's cache, which the informer fills a moment after the write."""
    async with asyncio.timeout(10):
        while True:
            listed = await stub.ListRegistrations(pb.ListRegistrationsRequest(model=model))
            if len(listed.registrations) == count:
                return listed
            await asyncio.sleep(0.05)


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_registration_serves_beside_the_models_workers_until_offline_or_removed(
    control_plane: ControlPlane,
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub,
    api: ApiServer,
    etcd_client: Any,
) -> None:
    async with running_worker(ECHO) as worker:
        await register(etcd_client, "w1", worker.address, {"device": "cpu"})
        everyone = Watcher(control_plane.address, "echo")
        cpus = Watcher(control_plane.address, "echo", "device=cpu")
        await everyone.until(["w1"], timeout=10)

        registered = (await stub.RegisterModel(request(api.url))).registration
        api_id = registered.registration_id
        assert api_id.startswith("api-") and len(api_id) == len("api-") + 8
        await everyone.until(sorted([api_id, "w1"]), timeout=10)
        await cpus.until(["w1"])  # a selector the API's tags do not match leaves it out

        assert everyone.latest is not None
        endpoint = next(e for e in everyone.latest.endpoints if e.worker_id == api_id)
        assert endpoint.address == f"127.0.0.1:{api.port}"
        assert dict(endpoint.tags) == {"kind": "http-api", "owner": "team-a"}
        assert endpoint.http_api.url_template == f"{api.url}/v1/answer"
        assert endpoint.http_api.body_template == BODY
        assert endpoint.http_api.response_path == "data.items[].attributes.answer"
        assert dict(endpoint.http_api.headers) == {
            "Authorization": "Bearer ${ANSWERS_KEY}",
            "X-Team": "blue",
        }
        worker_endpoint = next(e for e in everyone.latest.endpoints if e.worker_id == "w1")
        assert not worker_endpoint.HasField("http_api")

        stored = await etcd_client.get(Keys().registration(api_id))
        record = json.loads(stored.value)
        assert (record["schema_version"], record["model"], record["online"]) == (1, "echo", True)
        assert record["api"]["headers"]["Authorization"] == "Bearer ${ANSWERS_KEY}"

        offline = await stub.SetRegistrationOnline(
            pb.SetRegistrationOnlineRequest(registration_id=api_id, online=False)
        )
        assert not offline.registration.online
        await everyone.until(["w1"])
        await stub.SetRegistrationOnline(
            pb.SetRegistrationOnlineRequest(registration_id=api_id, online=True)
        )
        await everyone.until(sorted([api_id, "w1"]))

        await stub.RemoveRegistration(pb.RemoveRegistrationRequest(registration_id=api_id))
        await everyone.until(["w1"])
        assert await etcd_client.get(Keys().registration(api_id)) is None
        listed = await stub.ListRegistrations(pb.ListRegistrationsRequest())
        assert list(listed.registrations) == []
        await everyone.close()
        await cpus.close()


async def test_an_unknown_registration_is_not_found(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub,
) -> None:
    for call in (
        stub.RemoveRegistration(pb.RemoveRegistrationRequest(registration_id="api-00000000")),
        stub.SetRegistrationOnline(
            pb.SetRegistrationOnlineRequest(registration_id="api-00000000", online=False)
        ),
    ):
        error = await refusal(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "registration 'api-00000000' does not exist" in (error.details() or "")


async def test_a_failing_health_check_takes_it_out_until_it_passes_again(
    control_plane: ControlPlane,
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub,
    api: ApiServer,
) -> None:
    checked_by_get = (await stub.RegisterModel(request(api.url))).registration.registration_id
    no_health_url = request(api.url, health_url="")  # checked by a TCP connect
    checked_by_connect = (await stub.RegisterModel(no_health_url)).registration.registration_id
    both = sorted([checked_by_get, checked_by_connect])
    watcher = Watcher(control_plane.address, "echo")
    await watcher.until(both, timeout=10)

    api.stop()
    await watcher.until([], timeout=10)
    listed = await listed_until(stub, "echo", 2)
    assert [(r.online, r.healthy) for r in listed.registrations] == [(True, False)] * 2

    api.start()  # on the same port
    await watcher.until(both, timeout=10)
    await watcher.close()


async def test_listings_redact_header_values_that_are_not_references(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub, api: ApiServer
) -> None:
    reply = await stub.RegisterModel(request(api.url))
    listed = await listed_until(stub, "echo", 1)
    for registration in (reply.registration, listed.registrations[0]):
        assert dict(registration.http_api.headers) == {
            "Authorization": "Bearer ${ANSWERS_KEY}",
            "X-Team": "<redacted>",
        }
        assert registration.owner == "team-a"
        assert registration.create_time.seconds > 0
    assert (
        list((await stub.ListRegistrations(pb.ListRegistrationsRequest(model="x"))).registrations)
        == []
    )


async def test_a_literal_secret_is_refused_and_nothing_is_stored(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub, api: ApiServer, etcd_client: Any
) -> None:
    literal = request(api.url, headers={"Authorization": "Bearer sk-live-0123456789"})
    error = await refusal(stub.RegisterModel(literal))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sk-live" not in (error.details() or "")
    assert from_rpc_error(error).field == "http_api.headers.Authorization"
    assert list(await etcd_client.get_prefix(Keys().registrations.encode())) == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [("http://10.0.0.1:8080", "private"), ("http://169.254.169.254", "cloud metadata")],
)
async def test_an_internal_address_is_refused(
    stub: controlplane_pb2_grpc.ControlPlaneAsyncStub, url: str, kind: str
) -> None:
    error = await refusal(stub.RegisterModel(request(url, health_url="")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a {kind} address" in (error.details() or "")
    assert from_rpc_error(error).field == "http_api.url_template"


async def test_loopback_is_refused_unless_allowed(etcd: EtcdServer, api: ApiServer) -> None:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    try:
        async with grpc.aio.insecure_channel(plane.address) as channel:
            await plane.synced.wait()
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            error = await refusal(stub.RegisterModel(request(api.url)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a loopback address" in (error.details() or "")
    finally:
        await plane.stop()


async def test_admin_calls_need_the_admin_token_and_listing_does_not(
    etcd: EtcdServer, api: ApiServer
) -> None:
    auth = AuthSettings(admin_tokens=[SecretStr(ADMIN)])
    plane = ControlPlane(settings(etcd, auth=auth))
    await plane.start()
    try:
        async with grpc.aio.insecure_channel(plane.address) as channel:
            await plane.synced.wait()
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            token = (("authorization", f"Bearer {ADMIN}"),)
            for call in (
                stub.RegisterModel(request(api.url)),
                stub.SetRegistrationOnline(
                    pb.SetRegistrationOnlineRequest(registration_id="api-00000000")
                ),
                stub.RemoveRegistration(
                    pb.RemoveRegistrationRequest(registration_id="api-00000000")
                ),
            ):
                assert (await refusal(call)).code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.RegisterModel(request(api.url), metadata=token)
            await listed_until(stub, "echo", 1)  # without a token
    finally:
        await plane.stop()


async def test_with_etcd_away_admin_calls_are_unavailable(
    etcd: EtcdServer, stub: controlplane_pb2_grpc.ControlPlaneAsyncStub, api: ApiServer
) -> None:
    etcd.stop()
    for call in (
        stub.RegisterModel(request(api.url)),
        stub.RemoveRegistration(pb.RemoveRegistrationRequest(registration_id="api-00000000")),
    ):
        error = await refusal(call)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert (error.details() or "").startswith("etcd did not")


@pytest.mark.parametrize(
    ("health_path", "allowed", "healthy"),
    [
        ("/health", ["127.0.0.1/32"], True),
        (None, ["127.0.0.1/32"], True),  # no health URL: a TCP connect
        ("/missing", ["127.0.0.1/32"], False),  # 404 is not 2xx
        ("/health", [], False),  # the SSRF guard refuses loopback before connecting
        (None, [], False),
    ],
)
async def test_a_health_check_passes_on_2xx_or_a_connect_to_an_allowed_address(
    api: ApiServer, health_path: str | None, allowed: list[str], healthy: bool
) -> None:
    record = RegistrationRecord(
        registration_id="api-1",
        model="echo",
        api=ApiRecord(
            url_template=f"{api.url}/v1/answer",
            body_template=BODY,
            response_path="answer",
            health_url=f"{api.url}{health_path}" if health_path else "",
        ),
    )
    reports: list[tuple[str, WorkerHealth]] = []
    prober = ApiProber(
        record,
        7,
        lambda registration_id, health: reports.append((registration_id, health)),
        allowed_networks=allowed,
        interval=60,
        timeout=5,
    )
    prober.start()
    try:
        await eventually(lambda: bool(reports), timeout=10)
    finally:
        await prober.stop()
    [(registration_id, health)] = reports
    assert (registration_id, health.reachable, health.registration) == ("api-1", healthy, 7)


async def test_every_replica_serves_the_same_sets_from_etcd(
    etcd: EtcdServer, control_plane: ControlPlane, api: ApiServer
) -> None:
    await eventually(control_plane.is_leader, timeout=10)
    follower = ControlPlane(settings(etcd))
    await follower.start()
    try:
        async with grpc.aio.insecure_channel(follower.address) as channel:
            await follower.synced.wait()
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            # registered through the follower; the leader checks it, the follower reads
            # the leader's result back from etcd
            registered = await stub.RegisterModel(request(api.url))
            api_id = registered.registration.registration_id
            on_follower = Watcher(follower.address, "echo")
            on_leader = Watcher(control_plane.address, "echo")
            await on_follower.until([api_id], timeout=10)
            await on_leader.until([api_id], timeout=10)
            assert not follower.is_leader()
            await on_follower.close()
            await on_leader.close()
    finally:
        await follower.stop()
