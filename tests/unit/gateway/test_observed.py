"""What stands in front of the gateway's routes as its settings say: nothing with telemetry
off (the benchmarked default), the metrics middleware with /metrics on, the tracing
middleware outermost with tracing on."""

from __future__ import annotations

import os
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from gateway.metrics import HttpMetrics
from gateway.server import Gateway
from gateway.settings import GatewaySettings
from modelyard_server.telemetry.settings import TelemetrySettings

TRACING = TelemetrySettings(otlp_endpoint="http://127.0.0.1:1")  # nothing is exported


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("settings", "outermost"),
    [
        ({}, FastAPI),
        ({"metrics_port": 0}, HttpMetrics),
        ({"telemetry": TRACING}, OpenTelemetryMiddleware),
        ({"metrics_port": 0, "telemetry": TRACING}, OpenTelemetryMiddleware),
    ],
)
async def test_the_requests_pass_through_what_telemetry_is_on(
    settings: dict[str, Any], outermost: type
) -> None:
    gateway = Gateway(GatewaySettings(**settings))
    try:
        assert type(gateway.http.config.app) is outermost
    finally:
        await gateway.abort()  # it opened nothing yet but its clients


def test_metrics_and_tracing_settings_come_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELYARD_GATEWAY_METRICS_PORT", "9106")
    monkeypatch.setenv("MODELYARD_GATEWAY_TELEMETRY__OTLP_ENDPOINT", "http://jaeger:4317")
    settings = GatewaySettings()
    assert settings.metrics_port == 9106
    assert settings.telemetry.otlp_endpoint == "http://jaeger:4317"
    assert GatewaySettings.model_fields["metrics_port"].default == -1
