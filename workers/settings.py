"""Worker settings: what a worker serves (its YAML settings file) and how it runs.

A worker config lists models; each is a Hugging Face id or local path run through a
`transformers` pipeline, or a Python class path for a custom model:

    models:
      - name: sentiment
        source: distilbert-base-uncased-finetuned-sst-2-english   # id or local path
        task: sentiment-analysis            # optional when the checkpoint's config says it
        device: auto                        # auto | cpu | cuda:N | mps
        batching: {max_batch_size: 16, max_wait_ms: 2}
        parameters: {top_k: 1}              # defaults a request may override
      - name: doubler
        class: my_package.models:Doubler    # a modelyard.model.Model subclass

Every worker setting can also come from the environment with the prefix
`MODELYARD_WORKER_` (e.g. MODELYARD_WORKER_PORT=50051; nested ones with `__`:
MODELYARD_WORKER_ETCD__ENDPOINTS='["10.0.0.5:2379"]'); a setting given on the command line
wins over the YAML file, which wins over the environment (`load_settings`, through the
loader every service shares: `modelyard_server.settings_file`).

With `etcd` set, the worker registers itself there under a lease and follows its desired
state (drain); without it, it is a standalone server that nothing discovers:

    etcd: {endpoints: ["127.0.0.1:2379"], prefix: /modelyard}
    lease_ttl: 3                      # seconds; the key disappears this long after a crash
    advertise_address: worker-a:50051 # what others dial, when host:port is not it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelyard.names import MAX_NAME_LENGTH
from modelyard_server.auth import AuthSettings
from modelyard_server.etcd import EtcdSettings
from modelyard_server.logging_setup import LogSettings
from modelyard_server.settings_file import build_settings
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.tls import TlsSettings


class BatchingConfig(BaseModel):
    """How one model gathers concurrent requests into a batch."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(1, ge=1, description="Largest batch; 1 turns batching off.")
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch's first request waits for company."
    )
    max_queue_size: int = Field(
        256, ge=1, description="Requests that may wait; beyond it RESOURCE_EXHAUSTED."
    )


class ModelConfig(BaseModel):
    """One served model."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=MAX_NAME_LENGTH,
        description="Name clients call.",
    )
    source: str = Field("", description="Hugging Face id or local path of the weights.")
    class_path: str = Field(
        "", alias="class", description="`module:Class` of a modelyard.model.Model subclass."
    )
    task: str | None = Field(None, description="Pipeline task; inferred from config if unset.")
    device: str = Field("auto", description="auto | cpu | cuda[:N] | mps")
    threads: int = Field(
        1,
        ge=1,
        description="CPU threads for this model's inference. torch's default (all cores "
        "per model) oversubscribes small machines once several models run at once.",
    )
    batching: BatchingConfig = Field(default_factory=lambda: BatchingConfig())
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Default parameters; requests may override them."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Passed to the loader (e.g. dtype, revision)."
    )
    version: str = Field("", description="Reported version; derived from the files if empty.")
    max_input_chars: int = Field(
        100_000,
        ge=1,
        description="Most characters of text one request's inputs may hold; more is "
        "INVALID_ARGUMENT before any tokenizer sees it. Classification and embedding "
        "models also cut their input to the model's own token limit.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if bool(self.source) == bool(self.class_path):
            raise ValueError(
                f"model '{self.name}': set exactly one of 'source' (a Hugging Face id or "
                "local path) or 'class' (a Python class path)"
            )
        return self

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        from workers.devices import check_device_string

        check_device_string(value)
        return value


class WorkerSettings(BaseSettings):
    """How a worker runs. Env prefix MODELYARD_WORKER_."""

    model_config = SettingsConfigDict(
        env_prefix="MODELYARD_WORKER_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    worker_id: str = Field(
        "",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
        description="Stable id (its etcd key); defaults to <hostname>-<bound port>.",
    )
    etcd: EtcdSettings | None = Field(
        None, description="Where to register; None runs a standalone worker that no one finds."
    )
    lease_ttl: float = Field(
        3.0,
        ge=1.0,
        description="Seconds the registration outlives a worker that stopped refreshing it "
        "(crashed, frozen, cut off); etcd counts whole seconds.",
    )
    advertise_address: str = Field(
        "", description="host:port that others dial; defaults to host:bound port."
    )
    models: list[ModelConfig] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict, description="User device tags.")
    strict: bool = Field(False, description="Refuse to start when any model fails to load.")
    grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger requests get RESOURCE_EXHAUSTED."
    )
    metrics_port: int = Field(-1, ge=-1, description="Prometheus /metrics port; -1 is off.")
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
    port_file: Path | None = Field(
        None, description="Write the bound port here once serving (for port 0)."
    )

    @field_validator("advertise_address")
    @classmethod
    def _address_form(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit()):
            raise ValueError(f"advertise_address {value!r} must look like host:port")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> WorkerSettings:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model name '{model.name}' appears twice")
            seen.add(model.name)
        return self


def load_settings(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    etcd_endpoints: list[str] | None = None,
) -> WorkerSettings:
    """`build_settings` for the worker (the environment, then the file at `path`, then the
    `overrides` that are set), with each model's `source` resolved against the file's folder.

    `etcd_endpoints` (the command line's --etcd) replaces only the endpoints of the file's
    `etcd:` section, keeping its prefix, TLS and user settings.
    """
    settings = build_settings(WorkerSettings, path, overrides or {}, etcd_endpoints)
    base = path.parent if path is not None else Path.cwd()
    for model in settings.models:
        model.source = resolve_source(model.source, base)
    return settings


def require_models(settings: WorkerSettings) -> None:
    """ValueError when the settings list no models: such a worker has nothing to serve.

    Not a validator of WorkerSettings, which may be built without models (to read the
    environment's settings, say); `modelyard worker` calls it before starting anything.
    """
    if not settings.models:
        raise ValueError(
            "no models to serve: list at least one under 'models:' (a folder or Hugging "
            "Face id as its 'source', or a Python class as its 'class')"
        )


def resolve_source(source: str, base: Path) -> str:
    """Expands $VARS and ~, and anchors "./" and "../" paths at the config's folder.

    Other sources stay as written: the loader decides whether one is a folder or a Hugging
    Face id (the rule is in `workers.loader`); a relative "models/bert/base" stays relative
    to the working directory, as transformers reads it.
    """
    if not source:
        return source
    expanded = os.path.expanduser(os.path.expandvars(source))
    if expanded.startswith(("./", "../")):
        return str((base / expanded).resolve())
    return expanded
