"""How a service calls registered third-party APIs: one `http_api` field of its settings,
e.g. MODELYARD_COMPOSER_HTTP_API__ALLOWED_NETWORKS='["127.0.0.1/32"]'."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator


class HttpApiSettings(BaseModel):
    """The outbound HTTP client, the SSRF guard and the passive health of registrations."""

    model_config = ConfigDict(extra="forbid")

    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs a registered API may resolve to although they are not public "
        '(loopback, private, link-local, ...); e.g. ["127.0.0.1/32"] for the local stack '
        "and tests. Empty: only public addresses are called.",
    )
    max_response_bytes: int = Field(
        1024 * 1024, ge=1, description="A response body larger than this fails the call."
    )
    max_redirects: int = Field(
        3,
        ge=0,
        description="Redirects followed per call, only within the same scheme, host "
        "and port; one to anywhere else fails the call.",
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        description="The longest opening a connection may take (within the "
        "registration's timeout).",
    )
    max_connections: int = Field(
        100, ge=1, description="Connections open at once over all registered APIs."
    )
    max_keepalive_connections: int = Field(
        20, ge=0, description="Idle connections kept open for reuse."
    )
    keepalive_expiry_s: float = Field(
        5.0, ge=0, description="How long an idle connection is kept before it is closed."
    )
    allowed_fails: int = Field(
        3, ge=1, description="Consecutive failed calls after which a registration cools down."
    )
    cooldown_s: float = Field(
        30.0,
        gt=0,
        description="How long a cooling registration is skipped (its calls fail "
        "at once and go to another replica) before one call tries it again.",
    )
    default_temperature: float = Field(
        1.0, ge=0, description="{MODEL_TEMPERATURE} when a call sets no temperature."
    )

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR such as 127.0.0.1/32") from None
        return cidrs
