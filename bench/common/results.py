"""What a bench reports: one JSON line per scenario on stdout (after a `"bench": "machine"`
line, before a closing `"bench": "summary"` line), and all of it in one results file.

The exit code of a bench is 0 whenever the measurements ran; the goals' verdicts are in
each line's `checks` and `pass`, and in the summary's `all_pass`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.common.cpu import busy_pct


@dataclass
class Recorder:
    """Prints each record as a JSON line as soon as it is measured, and keeps it."""

    records: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        self.records.append(record)

    def scenarios(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["bench"] not in ("machine", "summary")]

    def finish(self, path: Path) -> dict[str, Any]:
        """Emits the summary line and writes every record to `path`; returns the summary."""
        scenarios = self.scenarios()
        summary = {
            "bench": "summary",
            "all_pass": all(r["pass"] for r in scenarios if "pass" in r),
            "failed": [r["scenario"] for r in scenarios if r.get("pass") is False],
            "duration_s": round(time.monotonic() - self.started, 1),
            "background_cpu_pct_after": round(busy_pct(0.5), 1),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.emit(summary)
        machine = next((r for r in self.records if r["bench"] == "machine"), {})
        verdicts = {k: v for k, v in summary.items() if k != "bench"}
        document = {"machine": machine, "results": scenarios, **verdicts}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        return summary


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(*packages: str) -> dict[str, Any]:
    """The `"bench": "machine"` line: the machine, the versions that matter, and how busy the
    machine was before the bench began (other work skews every figure)."""
    return {
        "bench": "machine",
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(*packages, "grpcio", "protobuf", "modelyard"),
        "background_cpu_pct_before": round(busy_pct(1.0), 1),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
