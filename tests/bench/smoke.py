"""Smoke runs of the benchmarks: each entry point as a subprocess, its JSON lines read back.

A smoke run (`--smoke`) is one tiny round: a handful of requests, the shortest durations,
stand-in models, no BentoML and no profiling. It checks that a benchmark still runs and
still reports what bench/README.md documents, never how fast anything was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
# Generous: a smoke run takes 10-45 s, longer when the machine's two cores are busy.
LIMIT_S = 300.0


@dataclass
class Finished:
    lines: list[dict[str, Any]]  # every stdout line, parsed
    output: Path | None  # the results file the run was told to write
    stderr: str

    def records(self, bench: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("bench") == bench]

    def document(self) -> Any:
        assert self.output is not None
        return json.loads(self.output.read_text())


class SmokeRun:
    """`python -m <module> <args> --output <tmp>`, started by `start()` (at once by
    `result()` if nobody started it), finished on `result()`."""

    def __init__(self, module: str, *args: str, results_file: bool = True) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        self.output = self.folder / "results.json" if results_file else None
        argv = [sys.executable, "-m", module, *args]
        if self.output is not None:
            argv += ["--output", str(self.output)]
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.timed_out = False
        self._cancelled = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Starts the run unless it has started already (two threads may ask)."""
        with self._lock:
            if self.process is not None or self._cancelled:
                return
            self.started = time.monotonic()
            # files, not pipes: a run that nobody reads yet must never block on a full pipe
            with (
                (self.folder / "stdout.log").open("wb") as stdout,
                (self.folder / "stderr.log").open("wb") as stderr,
            ):  # the child keeps its own descriptors
                self.process = subprocess.Popen(
                    self.argv,
                    cwd=REPO,
                    stdout=stdout,
                    stderr=stderr,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    start_new_session=True,  # its own process group, to be killed as one
                )

    def wait(self) -> None:
        """Until the run has ended (or has run LIMIT_S, then killed); starts it if need be.
        Returns at once if the run was cancelled before it started."""
        self.start()
        if self.process is None:
            return
        left = LIMIT_S - (time.monotonic() - self.started)
        try:
            self.process.wait(timeout=max(left, 1.0))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()

    def result(self) -> Finished:
        self.wait()
        assert self.process is not None, "the session is over: this run was cancelled"
        if self.timed_out:
            raise AssertionError(f"{' '.join(self.argv)} took over {LIMIT_S:.0f} s")
        stderr = (self.folder / "stderr.log").read_text(errors="replace")
        assert self.process.returncode == 0, f"{' '.join(self.argv)} failed:\n{stderr[-4000:]}"
        stdout = (self.folder / "stdout.log").read_text()
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        return Finished(lines, self.output, stderr)

    def remove_files(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def kill(self) -> None:
        """Kills the run and every process it started, if it is still running (services
        run in process groups of their own, so its group alone would leave them behind)."""
        with self._lock:
            self._cancelled = True  # a run not started yet never starts
            if self.process is None or self.process.poll() is not None:
                return
        started: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            started = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGKILL)
        for child in started:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.process.wait(10)


def assert_has(record: dict[str, Any], *paths: str) -> None:
    """Each dotted path names a field the record carries (`worker.p50_ms`)."""
    for path in paths:
        value: Any = record
        for key in path.split("."):
            assert isinstance(value, dict) and key in value, (
                f"{record.get('bench')} line {record.get('scenario')!r} lacks {path!r}"
            )
            value = value[key]


# What every load result in a line carries (bench/README.md, "What is measured").
LOAD_FIGURES = (
    "ok", "errors", "capped", "p50_ms", "p90_ms", "p99_ms", "throughput_rps",
    "server_cpu_ms_per_req", "other_cpu_pct", "disturbed_rounds",
    "throughput_rps_rounds", "p50_ms_rounds",
)  # fmt: skip


def assert_load(record: dict[str, Any], key: str) -> None:
    """`record[key]` is a load result over rounds, and its requests were answered."""
    assert_has(record, *(f"{key}.{figure}" for figure in LOAD_FIGURES))
    assert record[key]["ok"] > 0, f"{record['scenario']!r}: no request of {key!r} answered"


def assert_verdict_shape(record: dict[str, Any]) -> None:
    """Every scenario line says its goal, its checks and its verdict (not which verdict)."""
    assert_has(record, "bench", "scenario", "goal", "checks", "pass", "baseline")
    assert record["checks"] and all(isinstance(v, bool) for v in record["checks"].values())
    assert record["pass"] == all(record["checks"].values())


def assert_run_shape(run: Finished, scenario_benches: dict[str, int]) -> list[dict[str, Any]]:
    """A machine line first, a summary line last, the expected scenario lines between
    (bench name -> how many), and the same records in the results file. Returns them."""
    assert run.lines[0]["bench"] == "machine"
    assert_has(run.lines[0], "cpu_count", "versions", "background_cpu_pct_before")
    summary = run.lines[-1]
    assert summary["bench"] == "summary"
    assert isinstance(summary["all_pass"], bool) and isinstance(summary["failed"], list)
    scenarios = run.lines[1:-1]
    counts: dict[str, int] = {}
    for record in scenarios:
        counts[record["bench"]] = counts.get(record["bench"], 0) + 1
        assert_verdict_shape(record)
    assert counts == scenario_benches
    assert summary["all_pass"] == all(r["pass"] for r in scenarios)
    document = run.document()
    assert document["machine"] == run.lines[0]
    assert document["results"] == scenarios
    assert document["all_pass"] == summary["all_pass"]
    return scenarios
