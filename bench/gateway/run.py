"""One run of the gateway bench: its options, and how a measurement is taken."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.quiet import Quiet
from bench.common.results import Recorder
from bench.common.stats import rounds_summary


@dataclass
class Run:
    workdir: Path
    rounds: int
    tokens: int  # per answer: max_tokens and min_new_tokens, so every answer has as many
    # smoke: one round of a handful of streams on the stand-in model, measures nothing
    smoke: bool = False
    quiet: Quiet = field(default_factory=lambda: Quiet(45.0, max_attempts=2, calm_wait_s=2.0))
    recorder: Recorder = field(default_factory=Recorder)

    def level(self, level: Level) -> Level:
        return level.smoke() if self.smoke else level

    def measurer(self, spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: self.quiet.measure(lambda: run_load(spec))


def alternating(
    measures: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, dict[str, Any]]:
    """Each measurement `rounds` times in alternating order (A B, B A, ...), summarised as
    `rounds_summary` does, plus the medians of the token figures it does not know."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    for index in range(rounds):
        for name in list(measures) if index % 2 == 0 else list(reversed(measures)):
            runs[name].append(measures[name]())
    summaries = {}
    for name, results in runs.items():
        summary = rounds_summary(results)
        summary["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in results)
        summary["tokens_per_s_rounds"] = [r["tokens_per_s"] for r in results]
        summary["completion_tokens"] = sum(r["completion_tokens"] for r in results)
        summaries[name] = summary
    return summaries
