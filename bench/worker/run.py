"""One run of the worker bench: where it works, how many rounds, what it measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.load.driver import Level
from bench.common.quiet import Quiet
from bench.common.results import Recorder
from bench.common.servers import Server


@dataclass
class Run:
    workdir: Path
    rounds: int
    # smoke: every scenario once, a handful of requests, stand-ins for the checkpoints
    smoke: bool = False
    quiet: Quiet = field(default_factory=Quiet)
    recorder: Recorder = field(default_factory=Recorder)

    def level(self, level: Level) -> Level:
        return level.smoke() if self.smoke else level

    def rounds_at(self, goal: bool) -> int:
        """The goal's levels get the rounds; the others are context."""
        return self.rounds if goal else 1


def load_spec(
    server: Server,
    model: str,
    inputs: list[dict[str, Any]],
    level: Level,
    **extra: Any,
) -> dict[str, Any]:
    """Predict of `model` on `server`, its CPU counted as the server's."""
    return level.spec(
        kind="predict",
        address=server.address,
        model=model,
        inputs=inputs,
        server_pids=[server.pid],
        **extra,
    )
