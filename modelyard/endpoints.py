"""Endpoints as the balancing library and its users see them (plain data, no gRPC)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Load:
    """What a worker last reported about how busy it is."""

    in_flight: int = 0  # calls accepted and not answered
    queue_depth: int = 0  # calls waiting for a batch or a thread
    latency_ms: float = 0.0  # recent mean call latency (EWMA)


#: How long a call to a registered API may take when its registration says nothing.
DEFAULT_HTTP_API_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class HttpApi:
    """How to call a registered third-party API (`modelyard.v1.HttpApi` as plain data)."""

    url_template: str
    body_template: str
    response_path: str  # JMESPath
    headers: Mapping[str, str] = field(default_factory=dict)  # values may hold ${NAME}
    timeout_s: float = DEFAULT_HTTP_API_TIMEOUT_S
    health_url: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One healthy, non-draining replica serving a model: a worker, or a registered
    third-party API when `http_api` is set (then `worker_id` is the registration's id)."""

    worker_id: str
    address: str
    tags: Mapping[str, str] = field(default_factory=dict)
    load: Load = field(default_factory=Load)
    http_api: HttpApi | None = None
    capacity: int = 0  # calls of the model it serves at once; 0 = unknown


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """The whole set for one model (or selector), as pushed by the control plane."""

    model: str
    version: int
    endpoints: tuple[Endpoint, ...] = ()
