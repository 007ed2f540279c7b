"""Composer settings. Env prefix MODELYARD_COMPOSER_ (nested with "__")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelyard_server.auth import AuthSettings
from modelyard_server.etcd import EtcdSettings
from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.logging_setup import LogSettings
from modelyard_server.routing import RoutingSettings
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.tls import TlsSettings


class ComposerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELYARD_COMPOSER_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(50070, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    controlplanes: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:50050"],
        description="Control-plane replicas to take endpoint sets from (any one suffices).",
    )
    etcd: EtcdSettings = Field(default_factory=lambda: EtcdSettings())
    policy: Literal["p2c", "round_robin", "least_loaded"] = Field(
        "p2c", description="How a replica is chosen per call."
    )
    routing: RoutingSettings = Field(
        default_factory=lambda: RoutingSettings(),
        description="How calls are retried on other replicas: max_attempts, eject_seconds, rescue.",
    )
    default_timeout: float = Field(
        60.0, gt=0, description="Deadline of a run whose caller set none, in seconds."
    )
    grace_seconds: float = Field(
        5.0, ge=0, description="On SIGTERM, how long runs in flight may finish."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Larger requests get RESOURCE_EXHAUSTED before they are read whole; at "
        "most the workers' limit, so the composer never buffers a run no worker would take.",
    )
    max_runs_in_flight: int | None = Field(
        None,
        ge=0,
        description="Runs (Run and RunStream) in flight at once; past it a run is refused at "
        "once with RESOURCE_EXHAUSTED and a retry hint. Unset or 0: sized from the workers' "
        "capacity as it changes (admission_factor).",
    )
    admission_factor: float = Field(
        1.5,
        gt=0,
        description="Without max_runs_in_flight, the limit is this many times the calls the "
        "replicas of this composer's models serve at once (as their endpoint sets say; one "
        "of unknown capacity counts 1), at least 2 and at most 10,000. With N composer "
        "replicas in front of the same workers, give each 1.5 / N.",
    )
    metrics_port: int = Field(
        -1, ge=-1, description="Prometheus /metrics port; -1 is off, 0 picks a free one."
    )
    telemetry: TelemetrySettings = Field(
        default_factory=lambda: TelemetrySettings(),
        description="Tracing (OTLP endpoint, sampler, service name); unset fields fall back "
        "to the OTEL_* variables, and with no endpoint anywhere tracing is off.",
    )
    logging: LogSettings = Field(
        default_factory=lambda: LogSettings(), description="Log format (text or json), level."
    )
    tls: TlsSettings = Field(
        default_factory=lambda: TlsSettings(),
        description="Certificate, key, CA bundle and client_auth (mutual TLS) for this "
        "service's port and the channels it opens; no certificate means plaintext.",
    )
    auth: AuthSettings = Field(
        default_factory=lambda: AuthSettings(),
        description="Admin and serving tokens, admin certificate names (never logged).",
    )
    http_api: HttpApiSettings = Field(
        default_factory=lambda: HttpApiSettings(),
        description="Calling registered third-party APIs: the SSRF guard's allowed_networks, "
        "response size, pool, cooldown after consecutive failures.",
    )
    port_file: Path | None = Field(None, description="Write the bound port here once serving.")
