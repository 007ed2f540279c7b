"""What a graph run reports as it goes (see composer.engine, which re-exports these): a node
started, a node finished (also an entry of the run's timeline), a streaming node's chunk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: str
    at: float  # seconds since the run started


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """How one node went: an event, and an entry of the timeline (proto NodeTiming)."""

    node: str
    started_at: float  # seconds since the run started
    duration: float
    workers: tuple[str, ...]
    status: Status
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NodeChunk:
    node: str
    index: int
    outputs: dict[str, Any]


Event = NodeStarted | NodeFinished | NodeChunk
