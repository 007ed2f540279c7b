"""The SSRF guard: which addresses a registered API may be called at.

A registration names a URL chosen by whoever registered it; without a guard a service would
POST to anything its network reaches (a cloud metadata service, etcd, an admin port on
localhost). Every address a host resolves to must be globally routable, i.e. none of
loopback, link-local, private, multicast, unspecified, reserved or cloud metadata, unless
it lies inside one of the `allowed_networks` (CIDRs; tests and the local stack allow
127.0.0.1/32). If any of a host's addresses is refused, the host is: a name that resolves to
one public and one private address is a rebinding trick, not a redundant API.

Two checks use the same rules:
- `check_url` / `check_url_async` at registration: literal IP hosts and names that resolve
  are checked; a name that does not resolve passes (the API may live on a network only the
  calling services see), since the call-time check refuses it anyway when it resolves badly.
- `resolve_checked` on every call: the addresses the HTTP client then connects to.

A refused address raises `AddressRefused`, an InvalidArgument (at registration the request
is at fault); the HTTP caller turns it into UNAVAILABLE for that one call.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from modelyard.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS over IPv6;
#: Alibaba), refused whatever their address class says.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
#: Names of metadata services, refused before any lookup (they resolve only inside a cloud,
#: and the refusal must not depend on where the check runs).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})


class AddressRefused(InvalidArgument):
    """A URL's host is, or resolves to, an address outbound calls may not reach."""


def check_address(
    host: str, address: IPAddress, allowed_networks: Sequence[str], *, field: str = ""
) -> None:
    """Raises AddressRefused (on `field`, when given) unless `address`, what `host`
    resolved to, may be called."""
    if any(address in network for network in parse_networks(tuple(allowed_networks))):
        return
    kind = _refused_kind(address)
    if kind:
        shown = host if host == str(address) else f"{host} ({address})"
        raise AddressRefused(
            f"calls to {shown} are refused: a {kind} address; only public addresses may "
            "be called unless the service's http_api.allowed_networks lists it",
            field=field,
        )


def check_url(url: str, allowed_networks: Sequence[str], *, field: str = "") -> None:
    """Raises AddressRefused (on `field`, when given) when `url`'s host is refused, by name,
    as a literal address, or by what it resolves to; an unresolvable name passes."""
    host, port = _host_and_port(url, field)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return
    _check_all(host, _addresses(infos), allowed_networks, field)


async def check_url_async(url: str, allowed_networks: Sequence[str], *, field: str = "") -> None:
    """`check_url` without blocking the loop (resolves with the loop's resolver)."""
    host, port = _host_and_port(url, field)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return
    _check_all(host, _addresses(infos), allowed_networks, field)


async def resolve_checked(
    host: str, port: int, allowed_networks: Sequence[str]
) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to, each checked: what a call may connect to. Raises
    AddressRefused when one is refused, OSError when the name does not resolve."""
    _check_name(host, "")
    try:
        addresses: tuple[IPAddress, ...] = (ipaddress.ip_address(host),)
    except ValueError:  # a name: the loop's resolver runs in a thread, skipped for literals
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = _addresses(infos)
    _check_all(host, addresses, allowed_networks, "")
    return addresses


@functools.lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The allowed CIDRs as networks (host bits ignored: "127.0.0.1/8" is 127.0.0.0/8);
    ValueError names a malformed one."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _refused_kind(address: IPAddress) -> str:
    """Why `address` is refused ("" when it is not), in words for the error message."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 reaches 10.0.0.1
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for kind, matches in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),  # shared (100.64/10), documentation, ...
    ):
        if matches:
            return kind
    return ""


def _host_and_port(url: str, field: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host, port = None, None
    if not host:
        raise InvalidArgument(f"{url!r} names no host to call", field=field)
    _check_name(host, field)
    return host, port or (443 if parts.scheme == "https" else 80)


def _check_name(host: str, field: str) -> None:
    if host.rstrip(".").lower() in METADATA_HOSTS:
        raise AddressRefused(f"calls to {host} are refused: a cloud metadata service", field=field)


def _addresses(
    infos: Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]],
) -> tuple[IPAddress, ...]:
    found: dict[IPAddress, None] = {}  # in the resolver's order, without repeats
    for *_, sockaddr in infos:
        # an IPv6 sockaddr's host may carry a zone ("fe80::1%eth0"): the address is before it
        found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return tuple(found)


def _check_all(
    host: str, addresses: Sequence[IPAddress], allowed_networks: Sequence[str], field: str
) -> None:
    for address in addresses:
        check_address(host, address, allowed_networks, field=field)
