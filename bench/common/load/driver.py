"""Running the load generator from a bench: to completion, or alongside the bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.children import Child, spawn
from bench.common.errors import BenchError
from bench.common.paths import REPO

MODULE = "bench.common.load"
ENV = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts, run after run


@dataclass(frozen=True)
class Level:
    """One load level: concurrency and bounded request counts."""

    concurrency: int
    requests: int
    warmup: int
    time_cap_s: float = 20.0

    def spec(self, **spec: Any) -> dict[str, Any]:
        """A load spec at this level."""
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "warmup": self.warmup,
            "time_cap_s": self.time_cap_s,
            **spec,
        }

    def smoke(self) -> Level:
        """The same concurrency, a handful of requests: exercises the code, measures nothing."""
        return Level(self.concurrency, min(self.requests, 2 * self.concurrency + 4), 2, 10.0)


def limit_s(spec: dict[str, Any]) -> float:
    """The longest a run may take: warm-up and measured phase, each time-capped, and start-up."""
    return 2 * float(spec.get("time_cap_s", 20.0)) + 60.0


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one load in its own process; its result."""
    return run_to_result(MODULE, spec, limit_s(spec))


def run_to_result(module: str, spec: dict[str, Any], limit: float) -> dict[str, Any]:
    """Runs `python -m <module> SPEC` (a load generator) to its end; its "result" line."""
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(spec)],
        capture_output=True,
        timeout=limit,
        check=False,
        cwd=REPO,
        env=ENV,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-3000:]
        raise BenchError(f"load generator failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    result.pop("event")
    return result


async def start_load(spec: dict[str, Any], workdir: Path, name: str) -> Child:
    """Starts one load alongside the bench: wait for its "started" and "result" events."""
    return await spawn(name, [sys.executable, "-m", MODULE, json.dumps(spec)], workdir)


async def result_of(child: Child, spec: dict[str, Any]) -> dict[str, Any]:
    """The result of a load started with `start_load`, once it is done."""
    result = await child.next_event("result", limit_s(spec))
    result.pop("event")
    return result
