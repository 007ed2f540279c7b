"""Gateway settings. Env prefix MODELYARD_GATEWAY_ (nested with "__"), e.g.
MODELYARD_GATEWAY_PORT=8000 or MODELYARD_GATEWAY_CONTROLPLANES='["10.0.0.1:50050"]'."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelyard_server.logging_setup import LogSettings


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
    logging: LogSettings = Field(
        default_factory=lambda: LogSettings(), description="Log format (text or json), level."
    )
    port_file: Path | None = Field(None, description="Write the bound port here once serving.")
