"""Latency histograms carry the trace id of the sampled span they were observed in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry, Histogram

from modelyard_server.telemetry.exemplars import observe, seconds_histogram

NAME = "modelyard_test_request_seconds"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def exemplars(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        sample.exemplar.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.exemplar is not None
    ]


def test_an_observation_in_a_sampled_span_carries_its_trace_id(provider: TracerProvider) -> None:
    registry = CollectorRegistry()
    latency = seconds_histogram(NAME, "Test latency.", ["model"], registry, buckets=(0.1, 1.0))

    with provider.get_tracer("test").start_as_current_span("call") as span:
        observe(latency.labels("echo"), 0.05)
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)

    assert exemplars(registry) == [{"trace_id": trace_id}]
    assert registry.get_sample_value(f"{NAME}_count", {"model": "echo"}) == 1


def test_without_a_sampled_span_the_observation_has_no_exemplar() -> None:
    registry = CollectorRegistry()
    latency = seconds_histogram(NAME, "Test latency.", [], registry)
    unsampled = TracerProvider(sampler=ALWAYS_OFF)

    observe(latency, 0.05)
    with unsampled.get_tracer("test").start_as_current_span("dropped"):
        observe(latency, 0.05)

    assert exemplars(registry) == []
    assert registry.get_sample_value(f"{NAME}_count") == 2
    unsampled.shutdown()


def test_a_latency_histogram_names_its_unit() -> None:
    with pytest.raises(ValueError, match="_seconds"):
        seconds_histogram("modelyard_test_request_latency", "No unit.", [], CollectorRegistry())
    assert isinstance(seconds_histogram(NAME, "Unit.", [], CollectorRegistry()), Histogram)
