"""Control-plane settings. Env prefix MODELYARD_CONTROLPLANE_ (nested with "__", e.g.
MODELYARD_CONTROLPLANE_ETCD__ENDPOINTS='["10.0.0.1:2379","10.0.0.2:2379"]')."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelyard_server.auth import AuthSettings
from modelyard_server.etcd import EtcdSettings
from modelyard_server.http_api.ssrf import parse_networks
from modelyard_server.logging_setup import LogSettings
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.tls import TlsSettings


class RegisteredApiSettings(BaseModel):
    """Registered third-party APIs: which addresses they may have, how they are checked."""

    model_config = ConfigDict(extra="forbid")

    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs a registered API may be at although they are not public "
        '(loopback, private, link-local, ...), e.g. ["127.0.0.1/32"] for the local stack '
        "and tests. Empty: registrations and health checks reach public addresses only.",
    )
    health_interval_s: float = Field(
        5.0, gt=0, description="Seconds between active health checks of each registration."
    )
    health_timeout_s: float = Field(
        2.0, gt=0, description="The longest one health check (GET or TCP connect) may take."
    )

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                parse_networks((cidr,))
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR such as 127.0.0.1/32") from None
        return cidrs


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELYARD_CONTROLPLANE_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(50050, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    replica_id: str = Field("", description="This replica's id; defaults to host-port.")
    etcd: EtcdSettings = Field(default_factory=lambda: EtcdSettings())
    election_ttl: float = Field(
        5.0,
        ge=1,
        description=(
            "Seconds a dead leader keeps leadership before a follower takes over. A leader "
            "rides out an event-loop stall or etcd blip of about half of it (bench: 5 s "
            "survives a 2 s stall; 2 s does not)."
        ),
    )
    load_interval_ms: int = Field(
        500, ge=50, description="How often workers send load reports when nothing changes."
    )
    refresh_seconds: float = Field(
        1.0, gt=0, description="How often endpoint sets are re-sent with fresh load."
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
    http_api: RegisteredApiSettings = Field(
        default_factory=lambda: RegisteredApiSettings(),
        description="Registered third-party APIs: allowed_networks (the SSRF guard's "
        "exceptions), health_interval_s, health_timeout_s.",
    )
    port_file: Path | None = Field(None, description="Write the bound port here once serving.")

    def resolved_replica_id(self, port: int) -> str:
        return self.replica_id or f"{socket.gethostname()}-{port}"
