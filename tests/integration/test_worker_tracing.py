"""A traced worker (in this process) exporting to a real OTLP receiver, called by a traced
client: each Predict's span has its queue wait and inference as children and records its
batch size and queue wait; each model call of a batch is one span, in a trace of its own,
linked to every request it served (the OpenTelemetry pattern for batches); a PredictStream's
span records the time to its first chunk. Batches are made exact with a gated model: one
call held on the model's thread while three queue behind it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.client import AsyncClient
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.telemetry.tracing import setup_tracing
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from tests.support.otlp import OtlpReceiver, ReceivedSpan

PREDICT = "/modelyard.v1.Predict/Predict"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):  # the machine's settings must not steer these tests
            monkeypatch.delenv(name)
    with OtlpReceiver() as running:
        yield running


def settings(receiver: OtlpReceiver, service: str) -> TelemetrySettings:
    return TelemetrySettings(otlp_endpoint=receiver.endpoint, service_name=service)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    found = [s for s in spans if s.parent_span_id == parent.span_id]
    assert len(found) == len({s.name for s in found}), found
    return {s.name: s for s in found}


async def test_each_request_has_its_queue_wait_and_inference_and_each_batch_links_its_requests(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "gate")
    models = [
        {
            "name": "batched",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 8, "max_wait_ms": 20},
            "options": {"predict_gate": str(gate)},
        }
    ]
    client_tracing = setup_tracing(settings(receiver, "test-client"), default_service_name="-")
    try:
        async with running_worker(models, telemetry=settings(receiver, "test-worker")) as worker:
            runner = worker.registry.get("batched").runner
            async with AsyncClient(
                worker.address, timeout=30, interceptors=client_tracing.client_interceptors()
            ) as client:
                first = asyncio.create_task(client.predict("batched", x=0))
                await eventually(lambda: worker.service.in_flight == 1 and runner.queue_depth == 0)
                rest = [asyncio.create_task(client.predict("batched", x=i)) for i in (1, 2, 3)]
                await eventually(lambda: runner.queue_depth == 3)  # queued behind the first
                gate.open()
                results = await asyncio.gather(first, *rest)
        # the worker flushed its spans as it stopped; the client's are flushed now
    finally:
        await asyncio.to_thread(client_tracing.shutdown)
    assert [r.outputs["batch_size"] for r in results] == [1, 3, 3, 3]
    spans = receiver.spans()

    calls = [s for s in spans if s.service == "test-worker" and s.name == PREDICT]
    assert len(calls) == 4
    assert len({call.trace_id for call in calls}) == 4  # each request its own trace
    for call in calls:
        parts = children(spans, call)
        assert set(parts) == {"queue wait", "inference"}
        assert all(part.attributes["modelyard.model"] == "batched" for part in parts.values())
        assert call.attributes["modelyard.queue_wait_seconds"] >= 0
        assert call.attributes["modelyard.model"] == "batched"
        assert call.attributes["modelyard.device"] == "cpu"
    sizes = sorted(call.attributes["modelyard.batch_size"] for call in calls)
    assert sizes == [1, 3, 3, 3]

    batches = [s for s in spans if s.name == "batch batched"]
    assert sorted(len(b.links) for b in batches) == [1, 3]  # two model calls
    linked = {link for batch in batches for link in batch.links}
    assert linked == {(call.trace_id, call.span_id) for call in calls}  # each exactly once
    for batch in batches:
        assert batch.service == "test-worker" and batch.parent_span_id is None
        assert batch.trace_id not in {call.trace_id for call in calls}
        assert batch.attributes["modelyard.batch_size"] == len(batch.links)
        for trace_id, span_id in batch.links:
            (call,) = [c for c in calls if (c.trace_id, c.span_id) == (trace_id, span_id)]
            assert call.attributes["modelyard.batch_size"] == len(batch.links)


async def test_a_stream_records_its_time_to_first_chunk_queue_wait_and_inference(
    receiver: OtlpReceiver,
) -> None:
    models = [{"name": "ticker", "class": "tests.support.models:Ticker"}]
    async with (
        running_worker(models, telemetry=settings(receiver, "test-worker")) as worker,
        AsyncClient(worker.address, timeout=30) as client,
    ):
        events = [e async for e in client.predict_stream("ticker", count=3)]
    assert [e.final for e in events] == [False, False, False, True]
    spans = receiver.spans()
    (stream,) = [s for s in spans if s.name == "/modelyard.v1.Predict/PredictStream"]
    assert stream.attributes["modelyard.time_to_first_token_seconds"] > 0
    assert stream.attributes["modelyard.batch_size"] == 1
    assert set(children(spans, stream)) == {"queue wait", "inference"}
    assert not [s for s in spans if s.name.startswith("batch ")]  # a stream is no batch
