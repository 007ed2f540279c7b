"""A service whose port is taken: the runner says which address is in use and exits 2 (the
caller's to fix); any other start failure stays exit 1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import grpc.aio
import pytest

from modelyard_server.ports import busy_address, port_in_use
from modelyard_server.runner import run_until_signalled


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another socket listens on (without SO_REUSEPORT, as most programs do)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


class GrpcService:
    """Starts a real gRPC server on `port`, as every modelyard service does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: grpc.aio.Server | None = None
        self.aborted = False

    async def start(self) -> None:
        self.server = grpc.aio.server()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        raise AssertionError("a service that never started is not stopped")

    async def abort(self) -> None:
        self.aborted = True


class Failing(GrpcService):
    async def start(self) -> None:
        raise RuntimeError("the model store is unreachable")


async def test_a_busy_port_exits_2_naming_the_address(
    taken: int, caplog: pytest.LogCaptureFixture
) -> None:
    service = GrpcService(taken)
    with caplog.at_level(logging.ERROR, logger="modelyard_server.runner"):
        assert await run_until_signalled(service, "composer") == 2
    assert service.aborted
    assert caplog.messages == [f"composer could not start: 127.0.0.1:{taken} is already in use"]


async def test_other_start_failures_exit_1_with_their_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="modelyard_server.runner"):
        assert await run_until_signalled(Failing(0), "worker") == 1
    assert caplog.messages == ["worker could not start: the model store is unreachable"]


def test_port_in_use(taken: int) -> None:
    assert port_in_use("127.0.0.1", taken)
    assert port_in_use("", taken)  # every address includes 127.0.0.1
    assert not port_in_use("127.0.0.1", 0)  # the system picks a free one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    assert not port_in_use("127.0.0.1", free)
    assert not port_in_use("no-such-host.invalid", taken)  # for gRPC to report


def test_busy_address_reads_grpcs_bind_error(taken: int) -> None:
    grpcs = f"Failed to bind to address 127.0.0.1:{taken}; set GRPC_VERBOSITY=debug ..."
    assert busy_address(RuntimeError(grpcs)) == f"127.0.0.1:{taken}"
    assert busy_address(RuntimeError(grpcs.replace(str(taken), "0"))) is None
    assert busy_address(RuntimeError("something else")) is None
