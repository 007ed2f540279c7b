"""How a service traces: its settings, and the standard OTEL_* variables they fall back to.

Each field left unset falls back to its standard OpenTelemetry variable, then to a default:

    otlp_endpoint   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT   (none: off)
    sampler_ratio   OTEL_TRACES_SAMPLER_ARG with a *traceidratio sampler, 1.0 for always_on,
                    0.0 for always_off                                                (1.0)
    parent_based    whether OTEL_TRACES_SAMPLER starts with parentbased_              (true)
    service_name    OTEL_SERVICE_NAME                                  (the service's own name)

OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn tracing off whatever the settings
say (an operator's switch). The exporter reads its other variables itself (headers, TLS
certificates, timeout, compression: OTEL_EXPORTER_OTLP_[TRACES_]*), and the batch span
processor its OTEL_BSP_* ones. An endpoint without a scheme means TLS unless
OTEL_EXPORTER_OTLP_INSECURE=true, as the OTLP exporter defines it: write http://host:4317
for a plaintext collector such as a local Jaeger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# OTEL_TRACES_SAMPLER -> (ratio, parent-based); None: the ratio is OTEL_TRACES_SAMPLER_ARG
_SAMPLERS: dict[str, tuple[float | None, bool]] = {
    "always_on": (1.0, False),
    "always_off": (0.0, False),
    "traceidratio": (None, False),
    "parentbased_always_on": (1.0, True),
    "parentbased_always_off": (0.0, True),
    "parentbased_traceidratio": (None, True),
}


class TelemetrySettings(BaseModel):
    """Tracing of one service (nested in each service's settings as `telemetry`)."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP gRPC receiver, e.g. http://jaeger:4317 (http:// is plaintext). "
        "Unset: the OTEL_EXPORTER_OTLP_* variables; none set: tracing is off.",
    )
    sampler_ratio: float | None = Field(
        None, ge=0, le=1, description="Share of new traces recorded, 0 to 1."
    )
    parent_based: bool | None = Field(
        None,
        description="Follow the caller's sampling decision when a call arrives with one "
        "(the ratio then applies only to traces that start here).",
    )
    service_name: str | None = Field(None, description="service.name in the trace backend.")


@dataclass(frozen=True)
class TracingConfig:
    """The settings resolved against the environment: what tracing runs with."""

    endpoint: str
    sampler_ratio: float
    parent_based: bool
    service_name: str


def tracing_config(
    settings: TelemetrySettings, *, default_service_name: str, environ: Mapping[str, str]
) -> TracingConfig | None:
    """What tracing runs with, or None when it is off. Raises ValueError for an OTEL_*
    value this cannot honour (another exporter or protocol, an unknown sampler), so a
    misconfigured service fails at start-up instead of silently tracing nothing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: only otlp (or none) is supported")
    for variable in _PROTOCOL_VARIABLES:
        protocol = environ.get(variable, "grpc").strip().lower()
        if protocol != "grpc":
            raise ValueError(f"{variable}={protocol!r}: only grpc is supported")
    source, endpoint = ("telemetry.otlp_endpoint", settings.otlp_endpoint)
    if not endpoint:
        source, endpoint = next(
            ((v, environ[v]) for v in _ENDPOINT_VARIABLES if environ.get(v)), (source, None)
        )
    if not endpoint:
        return None
    _check_endpoint(endpoint, source)
    ratio, parent_based = _sampler_from(environ)
    return TracingConfig(
        endpoint=endpoint,
        sampler_ratio=_first(settings.sampler_ratio, ratio, 1.0),
        parent_based=_first(settings.parent_based, parent_based, True),
        service_name=settings.service_name
        or environ.get("OTEL_SERVICE_NAME")
        or default_service_name,
    )


def _check_endpoint(endpoint: str, source: str) -> None:
    """Raises ValueError for what no OTLP gRPC exporter can connect to: left alone, the
    exporter would fail on every export in its thread while the service serves on."""
    form = "expected an OTLP gRPC receiver such as http://jaeger:4317"
    parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{source}={endpoint!r}: {form}")
    try:
        parsed.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise ValueError(f"{source}={endpoint!r}: the port is not a number up to 65535") from None


def _sampler_from(environ: Mapping[str, str]) -> tuple[float | None, bool | None]:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name:
        return None, None
    if name not in _SAMPLERS:
        raise ValueError(
            f"OTEL_TRACES_SAMPLER={name!r}: expected one of {', '.join(sorted(_SAMPLERS))}"
        )
    ratio, parent_based = _SAMPLERS[name]
    if ratio is None:
        ratio = _ratio(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    return ratio, parent_based


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={text!r}: expected a number") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={text!r}: expected a ratio from 0 to 1")
    return ratio


def _first(setting: T | None, variable: T | None, default: T) -> T:
    if setting is not None:
        return setting
    return variable if variable is not None else default
