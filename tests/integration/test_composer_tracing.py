"""A real composer, control plane and worker (in this process, on a real etcd) with tracing
on, exporting to a real OTLP receiver: a cancelled run still stops the worker's generation
(the instrumentation's cancellation bugs, opentelemetry-python-contrib #3271 and #2357, are
worked around), and a run's trace id comes back to its caller and names one trace from the
composer's call down to the worker's."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc.aio
import pytest
import pytest_asyncio

from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.client import AsyncClient
from modelyard.composer_client import AsyncComposerClient, Result
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.telemetry.settings import TelemetrySettings
from tests.integration.conftest import running_worker
from tests.support.graphs import ECHO_CHAIN as CHAIN
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from workers.server import Worker

CANCELLED = 1  # grpc.StatusCode.CANCELLED's number, as the spans record it
LONG = {
    # ticker streams ticks at 10 ms into echo, chunk by chunk
    "name": "long",
    "inputs": {"n": "int"},
    "nodes": [
        {"name": "gen", "model": "ticker", "inputs": {"count": "inputs.n"}},
        {"name": "each", "model": "echo", "inputs": {"tick": "gen.tick"}, "stream": "chunk"},
    ],
    "outputs": {"ticks": "gen.ticks"},
}


@dataclass
class Traced:
    receiver: OtlpReceiver
    composer: Composer
    worker: Worker


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):  # the machine's settings must not steer these tests
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
    with OtlpReceiver() as running:
        yield running


def telemetry(receiver: OtlpReceiver, service: str) -> TelemetrySettings:
    return TelemetrySettings(otlp_endpoint=receiver.endpoint, service_name=service)


@pytest_asyncio.fixture
async def traced(etcd: EtcdServer, receiver: OtlpReceiver) -> AsyncIterator[Traced]:
    plane = ControlPlane(
        ControlPlaneSettings(
            port=0, etcd=etcd.settings(), telemetry=telemetry(receiver, "test-controlplane")
        )
    )
    await plane.start()
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "ticker", "class": "tests.support.models:Ticker"},
    ]
    worker_telemetry = telemetry(receiver, "test-worker")
    async with running_worker(
        models, etcd=etcd.settings(), lease_ttl=2.0, telemetry=worker_telemetry
    ) as worker:
        composer = Composer(
            ComposerSettings(
                port=0,
                etcd=etcd.settings(),
                controlplanes=[plane.address],
                telemetry=telemetry(receiver, "test-composer"),
            )
        )
        await composer.start()
        try:
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            for model in ("echo", "ticker"):
                assert await composer.routed.wait_for_endpoints(model, timeout=30)
            yield Traced(receiver, composer, worker)
        finally:
            await composer.stop()
    await plane.stop()


def named(spans: list[ReceivedSpan], service: str, name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.service == service and s.name == name]


async def test_a_cancelled_run_stops_the_workers_generation_with_tracing_on(
    traced: Traced,
) -> None:
    request = pb.RunStreamRequest(graph=graph_from_dict(LONG))
    fill_value_map(request.inputs, {"n": 6000})  # a minute of ticks
    async with grpc.aio.insecure_channel(traced.composer.address) as channel:
        call = composer_pb2_grpc.ComposerStub(channel).RunStream(request)
        async for event in call:
            if event.WhichOneof("event") == "chunk" and event.chunk.node == "each":
                break  # the generation is under way and flowing downstream
        call.cancel()
    # The worker runs one stream per model thread: if the generation went on, this call
    # would wait a minute behind it and miss its deadline.
    async with AsyncClient(traced.worker.address) as client:
        result = await client.predict("ticker", count=1, timeout=30)
    assert result.outputs == {"ticks": 1}

    # and the spans say what happened: the worker's stream ended cancelled, the composer's
    # attempt and run were cut short, in one trace
    def worker_stream(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return named(spans, "test-worker", "/modelyard.v1.Predict/PredictStream")

    spans = traced.receiver.wait_for(lambda spans: bool(worker_stream(spans)))
    (stream,) = worker_stream(spans)
    assert stream.attributes["rpc.grpc.status_code"] == CANCELLED
    assert stream.attributes["modelyard.model"] == "ticker"
    spans = traced.receiver.wait_for(
        lambda spans: bool(named(spans, "test-composer", "run <inline>"))
    )
    (run,) = named(spans, "test-composer", "run <inline>")
    assert run.trace_id == stream.trace_id
    assert run.status == "ERROR"


async def test_a_runs_trace_id_comes_back_and_names_one_trace_down_to_the_worker(
    traced: Traced,
) -> None:
    async with AsyncComposerClient(traced.composer.address) as client:
        result = await client.run(CHAIN, x=5)
        streamed = [event async for event in client.run_stream(CHAIN, x=6)]
    assert result.outputs == {"x": 5}
    final = streamed[-1]
    assert isinstance(final, Result) and final.outputs == {"x": 6}
    assert len(result.trace_id) == 32 and final.trace_id not in ("", result.trace_id)

    def of_run(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.trace_id == result.trace_id]

    def complete(spans: list[ReceivedSpan]) -> bool:
        """The composer's call and the two worker calls (nodes a and b) have arrived."""
        served = named(of_run(spans), "test-composer", "/modelyard.v1.Composer/Run")
        calls = named(of_run(spans), "test-worker", "/modelyard.v1.Predict/Predict")
        return len(served) == 1 and len(calls) == 2

    spans = traced.receiver.wait_for(complete)
    mine = of_run(spans)
    by_id = {s.span_id: s for s in mine}

    def parent(span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_span_id is not None, span
        return by_id[span.parent_span_id]

    (served,) = named(mine, "test-composer", "/modelyard.v1.Composer/Run")
    (run,) = named(mine, "test-composer", "run <inline>")
    assert parent(run) == served
    for worker_call in named(mine, "test-worker", "/modelyard.v1.Predict/Predict"):
        client_call = parent(worker_call)
        attempt = parent(client_call)
        node = parent(attempt)
        assert (client_call.service, client_call.kind) == ("test-composer", "CLIENT")
        assert attempt.name == "attempt echo" and attempt.attributes["modelyard.attempt"] == 1
        assert attempt.attributes["modelyard.replica"] == traced.worker.worker_id
        assert node.name in ("node a", "node b") and parent(node) == run
        assert worker_call.attributes["modelyard.model"] == "echo"
