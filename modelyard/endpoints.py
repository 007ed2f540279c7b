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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One healthy, non-draining replica serving a model."""

    worker_id: str
    address: str
    tags: Mapping[str, str] = field(default_factory=dict)
    load: Load = field(default_factory=Load)


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """The whole set for one model (or selector), as pushed by the control plane."""

    model: str
    version: int
    endpoints: tuple[Endpoint, ...] = ()
