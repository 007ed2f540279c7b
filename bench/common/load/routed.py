"""`routed`: `RoutedClient.predict`, every coroutine sharing one client (one balancer, one
channel per worker), as the coroutines of one application do. Call number n sends
{"x": n} (SlowEcho's input)."""

from __future__ import annotations

import logging
import time
from typing import Any

from bench.common.load.spec import LoadSpec
from bench.common.load.target import Target, check_outputs
from modelyard.routed_client import RoutedClient

ROUTED_LOG = "modelyard.routed_client"


class RetryCounter(logging.Handler):
    """Counts RoutedClient's retries: it logs each at INFO ("... retrying on another
    replica") and exposes no counter, and a retry is what the failure scenario wants to see.
    If that log line ever changes, the failure scenario's check that calls caught by the
    kill were retried (tests/bench) says so."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.INFO and "retrying" in record.getMessage():
            self.at.append(time.monotonic())


async def open_routed(spec: LoadSpec) -> Target:
    retries = RetryCounter()
    logger = logging.getLogger(ROUTED_LOG)
    logger.addHandler(retries)
    logger.setLevel(logging.INFO)
    client = RoutedClient(spec.control_planes, policy=spec.policy, selector=spec.selector)

    async def call(sequence: int) -> None:
        await client.predict(spec.model, x=sequence, timeout=spec.deadline_s)

    async def check() -> dict[str, Any]:
        prediction = await client.predict(spec.model, x=-1, timeout=spec.deadline_s)
        check_outputs(dict(prediction.outputs), spec.expect)
        return {}

    def figures(since: float) -> dict[str, Any]:
        retried = [at for at in retries.at if at >= since]
        return {
            "policy": spec.policy,
            "selector": spec.selector,
            "concurrency": spec.concurrency,
            "retries": len(retried),
            "retries_at": [round(t, 4) for t in retried[:1000]],
            "endpoints_at_end": [e.worker_id for e in client.endpoints(spec.model)],
        }

    async def close() -> None:
        await client.close()
        logger.removeHandler(retries)

    return Target([call], check, close, figures)
