"""SIGTERM on a real worker process: in-flight requests all finish, new ones are refused,
and the process exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import Unavailable
from tests.integration.conftest import worker_process, write_config


def test_sigterm_loses_no_request_in_flight(tmp_path: Path) -> None:
    models = [
        {
            "name": "slow",
            "class": "tests.support.models:SlowEcho",
            "batching": {"max_batch_size": 4, "max_wait_ms": 5},
            "options": {"delay_ms": 250},
        }
    ]
    config = write_config(tmp_path / "worker.yaml", models, grace_seconds=10)
    with worker_process(config) as (process, address), Client(address, timeout=20) as client:
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(client.predict, "slow", x=i) for i in range(12)]
            time.sleep(0.3)  # all 12 accepted; about 1 s of work left in the queue
            process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            with pytest.raises(Unavailable):
                client.predict("slow", x=99)
            results = [f.result() for f in futures]
        assert [r.outputs["x"] for r in results] == list(range(12))
        assert process.wait(15) == 0
