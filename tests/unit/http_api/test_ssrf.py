"""The SSRF guard: which hosts and addresses a registered API may be called at."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from modelyard.errors import InvalidArgument
from modelyard_server.http_api.ssrf import (
    AddressRefused,
    check_address,
    check_url,
    check_url_async,
    resolve_checked,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12::1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),  # carrier-grade NAT, shared address space
    ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 reaches the IPv4 address
    ("::ffff:169.254.169.254", "cloud metadata"),
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_public_addresses_are_refused_naming_the_kind(address: str, kind: str) -> None:
    with pytest.raises(AddressRefused, match=f"a {kind} address"):
        check_address(address, ipaddress.ip_address(address), [])


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    check_address(address, ipaddress.ip_address(address), [])


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    allowed = ["127.0.0.1/32", "10.0.0.0/8"]
    check_address("x", ipaddress.ip_address("127.0.0.1"), allowed)
    check_address("x", ipaddress.ip_address("10.200.0.1"), allowed)
    with pytest.raises(AddressRefused, match="loopback"):
        check_address("x", ipaddress.ip_address("127.0.0.2"), allowed)
    with pytest.raises(AddressRefused, match="cloud metadata"):
        check_address("x", ipaddress.ip_address("169.254.169.254"), allowed)


def test_the_refusal_is_an_invalid_argument_naming_host_address_and_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_address("db.internal", ipaddress.ip_address("10.0.0.5"), [], field="http_api.url")
    assert "db.internal (10.0.0.5)" in caught.value.message
    assert caught.value.field == "http_api.url"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1:8080/v1/{MODEL_NAME}",
        "https://127.0.0.1/x",
        "http://localhost:9/x",  # resolves to loopback
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./",
    ],
)
def test_check_url_refuses_private_and_metadata_hosts(url: str) -> None:
    with pytest.raises(AddressRefused):
        check_url(url, [], field="http_api.url_template")


async def test_check_url_async_refuses_as_check_url_does() -> None:
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254"):
        await check_url_async("http://169.254.169.254/", [])
    await check_url_async("http://127.0.0.1:8/", ["127.0.0.1/32"])


def test_check_url_passes_public_and_allowed_hosts_and_names_that_do_not_resolve() -> None:
    check_url("https://8.8.8.8/v1/chat", [])
    check_url("http://127.0.0.1:8080/{MODEL_NAME}", ["127.0.0.1/32"])
    check_url("https://api.does-not-resolve.invalid/v1", [])  # refused at call time if bad


def test_check_url_refuses_a_url_without_host() -> None:
    with pytest.raises(InvalidArgument, match="names no host"):
        check_url("http:///path", [], field="f")


async def test_resolve_checked_returns_the_addresses_to_connect_to() -> None:
    assert await resolve_checked("127.0.0.1", 80, ["127.0.0.0/8"]) == (
        ipaddress.ip_address("127.0.0.1"),
    )
    with pytest.raises(AddressRefused, match="localhost"):
        await resolve_checked("localhost", 80, [])
    with pytest.raises(AddressRefused, match="metadata"):
        await resolve_checked("metadata.google.internal", 80, [])


async def test_resolve_checked_fails_for_a_name_that_does_not_resolve() -> None:
    with pytest.raises(socket.gaierror):
        await resolve_checked("nothing.invalid", 80, [])
