"""EtcdClient against a real etcd: the plain case, several endpoints, and settings checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient, EtcdSettings


async def test_put_get_and_lease_against_a_real_etcd(etcd: EtcdServer) -> None:
    client = EtcdClient(etcd.settings())
    await client.connect()
    lease = await client.lease(5)
    await client.put(b"/t/a", b"1", lease=lease)
    got = await client.get(b"/t/a")
    assert got is not None and got.value == b"1"
    await lease.revoke()
    assert await client.get(b"/t/a") is None  # revoking the lease removed the key
    await client.close()


async def test_several_endpoints_fail_over_to_a_live_member(etcd: EtcdServer) -> None:
    dead = f"127.0.0.1:{etcd.peer_port + 1000}"  # nothing listens there
    client = EtcdClient(EtcdSettings(endpoints=[dead, etcd.endpoint]))
    await client.connect()
    await client.put(b"/t/b", b"2")
    got = await client.get(b"/t/b")
    assert got is not None and got.value == b"2"
    await client.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"endpoints": []}, "at least one etcd endpoint"),
        ({"endpoints": ["localhost"]}, "must look like host:port"),
        ({"prefix": "modelyard"}, "starts with '/'"),
    ],
)
def test_bad_etcd_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EtcdSettings.model_validate(settings)


def test_several_host_names_are_refused_with_advice() -> None:
    with pytest.raises(ValueError, match="one DNS name"):
        EtcdSettings(endpoints=["etcd-a:2379", "etcd-b:2379"]).target()
