"""`free_port` (modelyard_cli.etcd_server): a port a server binds later, picked where no
outgoing connection can take it meanwhile."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelyard_cli import etcd_server
from modelyard_cli.etcd_server import LOWEST_PICKED, free_port


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises when taken
        return True


def test_a_port_is_picked_below_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")  # Linux's default
    monkeypatch.setattr(etcd_server, "EPHEMERAL_RANGE_FILE", ranges)
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST_PICKED <= port < 32768 and bindable(port) for port in ports)
    assert len(ports) > 1  # not one port for every caller


@pytest.mark.parametrize("text", ["10500\t60999\n", "garbage\n", None])
def test_with_no_room_below_it_or_no_range_known_the_kernel_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    if text is not None:
        ranges.write_text(text)
    monkeypatch.setattr(etcd_server, "EPHEMERAL_RANGE_FILE", ranges)
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert low <= free_port() <= high


def test_a_port_is_never_handed_out_twice_before_its_server_binds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("11024\t60999\n")  # room for 1,024 ports: repeats would show at once
    monkeypatch.setattr(etcd_server, "EPHEMERAL_RANGE_FILE", ranges)
    monkeypatch.setattr(etcd_server, "_HANDED_OUT", set())
    ports = [free_port() for _ in range(200)]  # none bound meanwhile
    assert len(set(ports)) == len(ports)
