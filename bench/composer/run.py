"""One run of the composer bench: options, rounds, and how a measurement is taken."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.quiet import Quiet
from bench.common.results import Recorder

PROMPT = "I have an idea!"
SCENARIOS = ("hop", "graph", "stream", "tracing", "soak", "tls")


@dataclass
class Run:
    workdir: Path
    rounds: int
    profile: bool = False
    only: set[str] = field(default_factory=lambda: set(SCENARIOS))
    whatif: bool = False
    # smoke: every scenario once on one stack of stand-in models, a handful of calls, no
    # BentoML: checks that the bench runs, measures nothing
    smoke: bool = False
    quiet: Quiet = field(default_factory=lambda: Quiet(30.0, max_attempts=2, calm_wait_s=2.0))
    recorder: Recorder = field(default_factory=Recorder)

    def level(self, level: Level) -> Level:
        return level.smoke() if self.smoke else level

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        """One load, measured when the machine is calm (repeated once if disturbed)."""
        return self.quiet.measure(lambda: run_load(spec))

    def measurer(self, spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: self.measure(spec)


def without_sample(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "sample"}
