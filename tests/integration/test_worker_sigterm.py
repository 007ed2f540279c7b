"""SIGTERM on a real worker process: in-flight requests all finish, new ones are refused,
and the process exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.client import Client
from modelyard.errors import Unavailable
from modelyard.v1 import load_pb2, load_pb2_grpc
from tests.integration.conftest import worker_process, write_config
from tests.support.models import Gate

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def until_in_flight(channel: grpc.Channel, count: int) -> None:
    """Reads the worker's load feed until it reports `count` calls in flight (up to 30 s)."""
    feed = load_pb2_grpc.WorkerLoadStub(channel).WatchLoad(load_pb2.WatchLoadRequest(), timeout=30)
    try:
        next(report for report in feed if report.in_flight == count)
    finally:
        feed.cancel()


def until_not_serving(channel: grpc.Channel, services: tuple[str, ...]) -> None:
    """Polls health until every one of `services` is NOT_SERVING (up to 30 s)."""
    health = health_pb2_grpc.HealthStub(channel)
    give_up = time.monotonic() + 30
    while any(
        health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status != NOT_SERVING
        for name in services
    ):
        assert time.monotonic() < give_up, f"{services} still serving 30 s after SIGTERM"
        time.sleep(0.01)


def test_sigterm_loses_no_request_in_flight(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "answer")  # the model answers nothing until the test opens it
    models = [
        {
            "name": "slow",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 4, "max_wait_ms": 5},
            "options": {"predict_gate": str(gate)},
        }
    ]
    config = write_config(tmp_path / "worker.yaml", models, grace_seconds=60)
    with (
        worker_process(config) as (process, address),
        Client(address, timeout=60) as client,
        grpc.insecure_channel(address) as channel,
        ThreadPoolExecutor(12) as pool,
    ):
        try:
            futures = [pool.submit(client.predict, "slow", x=i) for i in range(12)]
            until_in_flight(channel, 12)  # all accepted; held until the gate opens
            process.send_signal(signal.SIGTERM)
            until_not_serving(channel, ("", "slow"))
            with pytest.raises(Unavailable):
                client.predict("slow", x=99, timeout=10)  # refused, not held
        finally:
            gate.open()
        results = [f.result() for f in futures]
        assert [r.outputs["x"] for r in results] == list(range(12))
        assert process.wait(30) == 0
