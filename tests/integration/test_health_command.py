"""`modelyard health`, the command every container healthcheck runs: its exit code is the
answer (0 SERVING, 1 not serving, 2 nobody answered), with a one-line message and never a
traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

MODELYARD = str(Path(sys.executable).parent / "modelyard")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A gRPC server with only the standard health service: "" and one named service
    SERVING, another NOT_SERVING."""
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("modelyard.v1.Predict", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("loading-model", health_pb2.HealthCheckResponse.NOT_SERVING)
    grpc_server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}"
    grpc_server.stop(None)


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MODELYARD, "health", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("service", [[], ["modelyard.v1.Predict"]])
def test_serving_exits_0(server: str, service: list[str]) -> None:
    done = check(server, *service)
    assert done.returncode == 0, done.stderr
    assert "SERVING" in done.stdout


def test_not_serving_exits_1_and_says_so(server: str) -> None:
    done = check(server, "loading-model")
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {server} 'loading-model': NOT_SERVING"


def test_an_unknown_service_exits_1_naming_it(server: str) -> None:
    done = check(server, "no-such-model")
    assert done.returncode == 1
    assert "does not know the service 'no-such-model'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_nothing_listening_exits_2_without_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    done = check(address, "--timeout", "5")  # the port is closed again: refused at once
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: cannot reach {address}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout


def test_a_server_that_never_answers_exits_2_at_the_timeout() -> None:
    # listening but never accepting: the connection opens, no gRPC answer ever comes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        done = check(address, "--timeout", "0.5")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {address}: no answer within 0.5 s"
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", ":50051", "host:70000"])
def test_a_malformed_address_exits_2_with_one_line(address: str) -> None:
    done = check(address)
    assert done.returncode == 2
    assert done.stderr.startswith("error: expected HOST:PORT")
    assert len(done.stderr.strip().splitlines()) == 1
