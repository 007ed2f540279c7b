"""A real `modelyard gateway` process with tracing on and /metrics, exporting over OTLP to a
real receiver standing in for Jaeger, in front of a control plane, a worker and a composer
(in this process, on a real etcd; the worker and the composer trace to the same receiver).

The official `openai` client sends a `traceparent`: the gateway's server span continues
that trace, and the worker's (and, for a graph, the composer's) spans hang under it, one
trace from the client to the model; a client that leaves a stream still stops the model,
and the trace shows the cancelled call. /metrics counts each request under its route
template and status, refusals and unknown paths too, and times a stream's first chunk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import pytest_asyncio
import yaml
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.composer_client import AsyncComposerClient
from modelyard_cli.etcd_server import EtcdServer, free_port
from modelyard_cli.processes import start_service, stop_service
from modelyard_server.telemetry.settings import TelemetrySettings
from tests.helpers import leave_a_chat_stream
from tests.integration.conftest import running_worker
from tests.support.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_KEY = "sk-gateway-telemetry"
GATEWAY = "modelyard-gateway"
WORKER = "test-worker"
COMPOSER = "test-composer"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "a private prompt"}]
CHAT_ROUTE = "/v1/chat/completions"
CANCELLED = 1  # grpc.StatusCode.CANCELLED's number, as the spans record it
# a graph is a model: one string input, a `text` output
SAY = {
    "name": "say",
    "inputs": {"prompt": "string"},
    "nodes": [{"name": "a", "model": "echo", "inputs": {"text": "inputs.prompt"}}],
    "outputs": {"text": "a.text"},
}


MODELS = [
    {"name": "hello", "class": "tests.support.models:HelloChat"},
    {"name": "endless", "class": "tests.support.models:EndlessChat"},
    {"name": "echo", "class": "tests.support.models:Echo"},
]


@dataclass
class Observed:
    base_url: str
    metrics_url: str
    receiver: OtlpReceiver


def traceparent(trace_id: str, parent_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{parent_id}-01"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            patch.delenv(name)  # the machine's settings must not steer this test
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
        with OtlpReceiver() as running:
            yield running


def tracing(receiver: OtlpReceiver, service: str) -> TelemetrySettings:
    return TelemetrySettings(otlp_endpoint=receiver.endpoint, service_name=service)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def observed(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    folder = tmp_path_factory.mktemp("gateway-telemetry")
    with EtcdServer() as etcd:
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
        await plane.start()
        async with running_worker(
            MODELS, etcd=etcd.settings(), telemetry=tracing(receiver, WORKER)
        ):
            composer = Composer(
                ComposerSettings(
                    port=0,
                    etcd=etcd.settings(),
                    controlplanes=[plane.address],
                    telemetry=tracing(receiver, COMPOSER),
                )
            )
            await composer.start()
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            async with AsyncComposerClient(composer.address, timeout=30) as graphs:
                await graphs.deploy(SAY)
            metrics_port = free_port()
            config = folder / "gateway.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "controlplanes": [plane.address],
                        "composer": composer.address,
                        "auth": {"api_keys": [API_KEY]},
                        "metrics_port": metrics_port,
                        "telemetry": {"otlp_endpoint": receiver.endpoint},
                    }
                )
            )
            process, address = await asyncio.to_thread(
                start_service, ["gateway", "--config", str(config)], log_file=folder / "log"
            )
            try:
                yield Observed(
                    f"http://{address}/v1", f"http://127.0.0.1:{metrics_port}/metrics", receiver
                )
            finally:
                assert await asyncio.to_thread(stop_service, process) == 0
                await composer.stop()
        await plane.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(observed: Observed) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=observed.base_url, api_key=API_KEY, max_retries=0
    ) as opened:
        async with asyncio.timeout(60):  # until the gateway lists the worker's models
            while {"hello", "endless", "say"} - {m.id async for m in opened.models.list()}:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        yield opened


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans if span.trace_id == trace_id}


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """`span`'s parent, its parent's parent, ... as far as they are in `by_id`."""
    found = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        found.append(span)
    return found


def hop_chain(spans: list[ReceivedSpan], trace_id: str, parent_id: str) -> list[ReceivedSpan]:
    """The spans from a worker's server span up, parent by parent, to the gateway's server
    span, child of the client's span `parent_id`; empty until all of them have arrived."""
    by_id = in_trace(spans, trace_id)
    for span in by_id.values():
        if (span.service, span.kind) == (WORKER, "SERVER"):
            chain = [span, *ancestors(span, by_id)]
            top = chain[-1]
            if (top.service, top.kind, top.parent_span_id) == (GATEWAY, "SERVER", parent_id):
                return chain
    return []


async def test_an_openai_request_is_one_trace_from_the_client_to_the_worker(
    observed: Observed, client: openai.AsyncOpenAI
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = await client.chat.completions.create(
        model="hello", messages=HELLO, extra_headers=traceparent(trace_id, parent_id)
    )
    assert answer.choices[0].message.content == "hello"

    spans = observed.receiver.wait_for(lambda spans: bool(hop_chain(spans, trace_id, parent_id)))
    worker, call, gateway = hop_chain(spans, trace_id, parent_id)
    assert worker.name == "/modelyard.v1.Predict/Predict"
    assert (call.service, call.kind, call.name) == (GATEWAY, "CLIENT", worker.name)
    assert gateway.name == f"POST {CHAT_ROUTE}"
    assert gateway.attributes == {
        "http.method": "POST",
        "http.route": CHAT_ROUTE,
        "http.status_code": 200,
    }
    gateways = [span for span in in_trace(spans, trace_id).values() if span.service == GATEWAY]
    assert all("a private prompt" not in str(span) for span in gateways)


async def test_a_response_names_its_trace_and_the_gateway_span(
    observed: Observed, client: openai.AsyncOpenAI
) -> None:
    trace_id, parent_id = "8bf92f3577b34da6a3ce929d0e0e473a", "40f067aa0ba902bb"
    raw = await client.chat.completions.with_raw_response.create(
        model="hello", messages=HELLO, extra_headers=traceparent(trace_id, parent_id)
    )
    version, traced, span_id, flags = raw.headers["traceresponse"].split("-")
    assert (version, traced, flags) == ("00", trace_id, "01")
    spans = observed.receiver.wait_for(lambda spans: bool(hop_chain(spans, trace_id, parent_id)))
    *_, gateway = hop_chain(spans, trace_id, parent_id)
    assert span_id == gateway.span_id  # the request's own span, as a trace UI shows it


async def test_a_graph_called_as_a_model_traces_through_the_composer(
    observed: Observed, client: openai.AsyncOpenAI
) -> None:
    trace_id, parent_id = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
    stream = await client.chat.completions.create(
        model="say", messages=HELLO, stream=True, extra_headers=traceparent(trace_id, parent_id)
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "a private prompt"

    spans = observed.receiver.wait_for(lambda spans: bool(hop_chain(spans, trace_id, parent_id)))
    _, *composer, call, gateway = hop_chain(spans, trace_id, parent_id)
    run_stream = "/modelyard.v1.Composer/RunStream"
    assert (call.service, call.kind, call.name) == (GATEWAY, "CLIENT", run_stream)
    assert (composer[-1].service, composer[-1].kind, composer[-1].name) == (
        COMPOSER, "SERVER", run_stream
    )  # fmt: skip
    assert {span.service for span in composer} == {COMPOSER}
    assert "run say" in [span.name for span in composer]
    assert gateway.name == f"POST {CHAT_ROUTE}"


async def test_a_client_that_leaves_a_traced_stream_stops_the_generation(
    observed: Observed, client: openai.AsyncOpenAI
) -> None:
    trace_id, parent_id = "7bf92f3577b34da6a3ce929d0e0e4739", "30f067aa0ba902ba"
    headers = {"Authorization": f"Bearer {API_KEY}", **traceparent(trace_id, parent_id)}
    body = {"model": "endless", "messages": HELLO, "stream": True}
    async with httpx.AsyncClient(base_url=observed.base_url, headers=headers, timeout=60) as http:
        await leave_a_chat_stream(http, body)
    # the stream held the model's only thread: this is answered once it has stopped
    answer = await client.chat.completions.create(model="endless", messages=HELLO, timeout=30)
    assert answer.choices[0].message.content == "hello"

    # and the trace says so: the worker's stream was cancelled under the request's span
    spans = observed.receiver.wait_for(lambda spans: bool(hop_chain(spans, trace_id, parent_id)))
    worker, call, gateway = hop_chain(spans, trace_id, parent_id)
    assert worker.name == call.name == "/modelyard.v1.Predict/PredictStream"
    assert worker.attributes["rpc.grpc.status_code"] == CANCELLED
    assert gateway.attributes["http.status_code"] == 200  # what the stream began with


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], Sample]


async def metrics(observed: Observed) -> Samples:
    """The gateway's /metrics (OpenMetrics: with exemplars), by name and labels."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(observed.metrics_url)
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample
        for family in text_string_to_metric_families(answer.text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    sample = samples.get((name, tuple(sorted(labels.items()))))
    return 0.0 if sample is None else sample.value


async def test_metrics_count_requests_by_route_template_and_status(
    observed: Observed, client: openai.AsyncOpenAI
) -> None:
    before = await metrics(observed)
    stream = await client.chat.completions.create(model="hello", messages=HELLO, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "hello"
    trace_id = "6bf92f3577b34da6a3ce929d0e0e4738"  # last: its latency's exemplar is the newest
    await client.chat.completions.create(
        model="hello", messages=HELLO, extra_headers=traceparent(trace_id, "20f067aa0ba902b9")
    )
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")
    async with openai.AsyncOpenAI(
        base_url=observed.base_url, api_key="sk-wrong", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="hello", messages=HELLO)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        unknown = await http.get(f"{observed.base_url}/what-a-user-typed")
    assert unknown.status_code == 404
    after = await metrics(observed)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "modelyard_gateway_requests_total"
    assert grew(requests, route=CHAT_ROUTE, method="POST", code="200") == 2
    assert grew(requests, route=CHAT_ROUTE, method="POST", code="401") == 1
    assert grew(requests, route="/v1/models/{model}", method="GET", code="404") == 1
    assert grew(requests, route="<unmatched>", method="GET", code="404") == 1
    chat_ok = {"route": CHAT_ROUTE, "method": "POST", "code": "200"}
    assert grew("modelyard_gateway_request_seconds_count", **chat_ok) == 2
    assert grew("modelyard_gateway_first_chunk_seconds_count", route=CHAT_ROUTE) == 1
    # no name a client chose is a label
    for key in after:
        assert not any("no-such-model" in v or "what-a-user" in v for _, v in key[1])
    # a latency points at the trace it was measured in
    exemplars = {
        sample.exemplar.labels["trace_id"]
        for (name, _), sample in after.items()
        if name == "modelyard_gateway_request_seconds_bucket" and sample.exemplar is not None
    }
    assert trace_id in exemplars
