"""A service's /metrics over real HTTP on 127.0.0.1: OpenMetrics with trace-id exemplars
for Prometheus and for curl, the classic format for a scraper that asks for it by name."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Histogram

from modelyard_server.metrics_http import MetricsHttpServer
from modelyard_server.telemetry.exemplars import observe, seconds_histogram

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
CURL_ACCEPT = "*/*"
CLASSIC_ACCEPT = "text/plain;version=0.0.4"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def latency(registry: CollectorRegistry) -> Histogram:
    return seconds_histogram(
        "modelyard_test_request_seconds", "Test latency.", ["model"], registry, buckets=(0.1, 1.0)
    )


@pytest.fixture
def traced_observation(latency: Histogram) -> str:
    """Observes 0.05 s inside a sampled span; that span's trace id."""
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("call") as span:
        observe(latency.labels("echo"), 0.05)
    provider.shutdown()
    return trace.format_trace_id(span.get_span_context().trace_id)


@pytest_asyncio.fixture
async def metrics(registry: CollectorRegistry) -> AsyncIterator[MetricsHttpServer]:
    server = MetricsHttpServer(registry, host="127.0.0.1", port=0)
    server.start()
    yield server
    await server.stop()


async def scrape(server: MetricsHttpServer, accept: str) -> tuple[str, str]:
    """The content type and body of GET /metrics (urllib blocks: off the loop)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics", headers={"Accept": accept}
    )

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers["Content-Type"], response.read().decode()

    return await asyncio.to_thread(get)


@pytest.mark.parametrize("accept", [PROMETHEUS_ACCEPT, CURL_ACCEPT])
async def test_openmetrics_with_the_trace_id_exemplar_on_the_observed_bucket(
    metrics: MetricsHttpServer, traced_observation: str, accept: str
) -> None:
    content_type, body = await scrape(metrics, accept)

    assert content_type.startswith("application/openmetrics-text")
    bucket = next(
        line
        for line in body.splitlines()
        if line.startswith('modelyard_test_request_seconds_bucket{le="0.1",model="echo"}')
    )
    # value, then the exemplar: its labels, its value and its timestamp
    assert f' 1.0 # {{trace_id="{traced_observation}"}} 0.05 ' in bucket
    assert body.endswith("# EOF\n")


async def test_a_scraper_asking_for_the_classic_format_gets_it_without_exemplars(
    metrics: MetricsHttpServer, traced_observation: str
) -> None:
    content_type, body = await scrape(metrics, CLASSIC_ACCEPT)

    assert content_type.startswith("text/plain")
    assert 'modelyard_test_request_seconds_count{model="echo"} 1.0' in body
    assert traced_observation not in body


async def test_stop_closes_the_port(registry: CollectorRegistry) -> None:
    server = MetricsHttpServer(registry, host="127.0.0.1", port=0)
    port = server.start()
    await server.stop()

    assert server.port is None
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    with pytest.raises(OSError, match="Connection refused"):
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)
