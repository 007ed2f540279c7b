"""Tracing settings against the standard OTEL_* variables: what is on, sampled, named."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from modelyard_server.telemetry.settings import TelemetrySettings, TracingConfig, tracing_config

JAEGER = "http://jaeger:4317"


def resolve(environ: dict[str, str], **settings: object) -> TracingConfig | None:
    return tracing_config(
        TelemetrySettings.model_validate(settings),
        default_service_name="modelyard-worker",
        environ=environ,
    )


def test_off_without_an_endpoint_anywhere() -> None:
    assert resolve({}) is None
    assert resolve({"OTEL_SERVICE_NAME": "w", "OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_an_endpoint_from_settings_turns_it_on_with_the_defaults() -> None:
    assert resolve({}, otlp_endpoint=JAEGER) == TracingConfig(
        endpoint=JAEGER, sampler_ratio=1.0, parent_based=True, service_name="modelyard-worker"
    )


def test_the_endpoint_falls_back_to_the_traces_variable_then_the_general_one() -> None:
    general = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4317"}
    both = {**general, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317"}

    assert _endpoint(resolve(general)) == "http://general:4317"
    assert _endpoint(resolve(both)) == "http://traces:4317"
    assert _endpoint(resolve(both, otlp_endpoint=JAEGER)) == JAEGER


@pytest.mark.parametrize(
    "switch", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}]
)
def test_the_operators_switches_turn_it_off_whatever_the_settings_say(
    switch: dict[str, str],
) -> None:
    assert resolve(switch, otlp_endpoint=JAEGER) is None


@pytest.mark.parametrize(
    ("sampler", "argument", "ratio", "parent_based"),
    [
        ("always_on", None, 1.0, False),
        ("always_off", None, 0.0, False),
        ("traceidratio", "0.25", 0.25, False),
        ("parentbased_always_on", None, 1.0, True),
        ("parentbased_always_off", None, 0.0, True),
        ("parentbased_traceidratio", "0.1", 0.1, True),
        ("parentbased_traceidratio", None, 1.0, True),
    ],
)
def test_the_sampler_variables(
    sampler: str, argument: str | None, ratio: float, parent_based: bool
) -> None:
    environ = {"OTEL_TRACES_SAMPLER": sampler}
    if argument is not None:
        environ["OTEL_TRACES_SAMPLER_ARG"] = argument

    config = resolve(environ, otlp_endpoint=JAEGER)

    assert config is not None
    assert (config.sampler_ratio, config.parent_based) == (ratio, parent_based)


def test_settings_win_over_the_sampler_variables_one_field_at_a_time() -> None:
    environ = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}

    ratio_only = resolve(environ, otlp_endpoint=JAEGER, sampler_ratio=0.1)
    parent_only = resolve(environ, otlp_endpoint=JAEGER, parent_based=True)

    assert ratio_only is not None and parent_only is not None
    assert (ratio_only.sampler_ratio, ratio_only.parent_based) == (0.1, False)
    assert (parent_only.sampler_ratio, parent_only.parent_based) == (0.5, True)


def test_the_service_name_from_settings_then_the_variable_then_the_service() -> None:
    named = {"OTEL_SERVICE_NAME": "from-env"}

    assert _name(resolve({}, otlp_endpoint=JAEGER)) == "modelyard-worker"
    assert _name(resolve(named, otlp_endpoint=JAEGER)) == "from-env"
    assert _name(resolve(named, otlp_endpoint=JAEGER, service_name="worker-a")) == "worker-a"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER='jaeger_remote'"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "expected a number",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "from 0 to 1",
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, "only otlp"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "only grpc"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "only grpc"),
    ],
)
def test_what_cannot_be_honoured_fails_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(environ, otlp_endpoint=JAEGER)


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        ({"otlp_endpoint": "http://jaeger:notaport"}, {}, "the port is not a number"),
        ({"otlp_endpoint": "http://jaeger:99999"}, {}, "the port is not a number"),
        ({"otlp_endpoint": "http://"}, {}, "telemetry.otlp_endpoint='http://': expected an"),
        ({"otlp_endpoint": "ftp://jaeger:4317"}, {}, "expected an OTLP gRPC receiver"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "jaeger:43 17"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
    ],
)
def test_an_endpoint_no_exporter_can_reach_fails_at_start_up(
    settings: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve(environ, **settings)


@pytest.mark.parametrize("endpoint", [JAEGER, "https://collector.example:443", "jaeger:4317"])
def test_the_endpoint_forms_the_exporter_takes_are_kept(endpoint: str) -> None:
    assert _endpoint(resolve({}, otlp_endpoint=endpoint)) == endpoint


def test_the_ratio_setting_is_a_share() -> None:
    with pytest.raises(ValidationError):
        TelemetrySettings(sampler_ratio=1.5)
    with pytest.raises(ValidationError):
        TelemetrySettings.model_validate({"endpoint": JAEGER})  # a misspelt field


def _endpoint(config: TracingConfig | None) -> str:
    assert config is not None
    return config.endpoint


def _name(config: TracingConfig | None) -> str:
    assert config is not None
    return config.service_name
