"""Gateway settings. Env prefix MODELYARD_GATEWAY_ (nested with "__"), e.g.
MODELYARD_GATEWAY_PORT=8000, MODELYARD_GATEWAY_CONTROLPLANES='["10.0.0.1:50050"]' or
MODELYARD_GATEWAY_AUTH__API_KEYS='["sk-..."]'."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.logging_setup import LogSettings
from modelyard_server.routing import RoutingSettings
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.tls import TlsSettings


class GatewayAuth(BaseModel):
    """The API keys HTTP clients must send, and the token the gateway sends on its own
    calls. Keys come inline or from a file of one key a line ('#' starts a comment); both
    add up. Neither keys nor the token appear in a log line or an answer."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys a client sends as `Authorization: Bearer <key>` (an OpenAI "
        "client's api_key); set, every route but /health needs one (401 otherwise).",
    )
    api_keys_file: Path | None = Field(None, description="File of API keys.")
    token: SecretStr | None = Field(
        None,
        description="Bearer token sent to the composer, control planes and workers "
        "(a serving token, where they require one).",
    )
    token_file: Path | None = Field(None, description="File holding `token`.")

    def keys(self) -> list[str]:
        found = [secret.get_secret_value() for secret in self.api_keys]
        if self.api_keys_file is not None:
            found += _read_lines(self.api_keys_file)
        return [key for key in found if key]

    def outgoing_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return next(iter(_read_lines(self.token_file)), None)
        return None


def _read_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELYARD_GATEWAY_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    controlplanes: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:50050"],
        description="Control-plane replicas: endpoint sets and the served models' list.",
    )
    composer: str | None = Field(
        "127.0.0.1:50070",
        description="A composer whose deployed graphs with text output are models too; "
        "empty or null: no graphs.",
    )
    policy: Literal["p2c", "round_robin", "least_loaded"] = Field(
        "p2c", description="How a replica is chosen per call."
    )
    routing: RoutingSettings = Field(
        default_factory=lambda: RoutingSettings(),
        description="How calls are retried on other replicas: max_attempts, eject_seconds, rescue.",
    )
    request_timeout: float = Field(
        60.0, gt=0, description="Deadline of one request (a whole stream), in seconds."
    )
    catalog_ttl: float = Field(
        5.0,
        gt=0,
        description="How long the list of models a request is checked against is reused; "
        "a name not on it is looked up afresh (at most every catalog_miss_refresh s).",
    )
    catalog_miss_refresh: float = Field(
        0.5, ge=0, description="Least time between two look-ups caused by unknown names."
    )
    catalog_forget_after: float = Field(
        60.0,
        ge=0,
        description="A model no worker lists any more is still called (503: no replica) "
        "for this long before it is unknown (404), so a restarting worker's clients retry.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body; larger is refused (413)."
    )
    grace_seconds: float = Field(
        5.0, ge=0, description="On SIGTERM, how long requests and streams in flight may finish."
    )
    metrics_port: int = Field(
        -1,
        ge=-1,
        description="Prometheus /metrics port (its own, so API keys and the public port "
        "stay apart from scrapes); -1 is off, 0 picks a free one.",
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
        description="Certificate and key for HTTPS (client_auth: clients need a certificate "
        "signed by ca_file); the same settings make the gRPC channels to the composer, "
        "control planes and workers trust ca_file and present the certificate. No "
        "certificate means plain HTTP and plaintext gRPC.",
    )
    auth: GatewayAuth = Field(
        default_factory=lambda: GatewayAuth(),
        description="API keys clients must send, and the gateway's own token (never logged).",
    )
    http_api: HttpApiSettings = Field(
        default_factory=lambda: HttpApiSettings(),
        description="Calling registered third-party APIs: the SSRF guard's allowed_networks, "
        "response size, pool, cooldown after consecutive failures.",
    )
    port_file: Path | None = Field(None, description="Write the bound port here once serving.")
