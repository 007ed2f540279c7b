"""CPU accounting: of processes, of the whole machine, and over a window of time.

Figures are in percent of one core (200 = both cores of a 2-core machine busy). What the
processes a bench measures did not use of the machine's busy time was other work (other
people's tests on shared cores), which skews every figure, so benches record it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += process_cpu_seconds(psutil.Process(pid))
    return total


def process_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of `process` (kept across reads: no new lookup each time)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def pct(seconds: float, wall: float) -> float:
    """Percent of one core."""
    return round(100.0 * seconds / wall, 1) if wall > 0 else 0.0


def busy_pct(interval_s: float = 0.25) -> float:
    """How busy the whole machine is now, in percent of one core summed over cores."""
    return float(psutil.cpu_percent(interval=interval_s)) * (os.cpu_count() or 1)


def tree_pids() -> list[int]:
    """This process and every descendant: all the work the bench itself causes."""
    me = psutil.Process()
    return [me.pid, *(child.pid for child in me.children(recursive=True))]


def idle_cpu_pct(pids: list[int], seconds: float = 2.0) -> float:
    """CPU the processes use over `seconds` while nobody calls them."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return pct(cpu_seconds(pids) - before, seconds)


@dataclass
class CpuWindow:
    """CPU use of named groups of processes over a window, and how much of the machine other
    work took meanwhile (the machine's busy time minus this bench's whole process tree)."""

    pids: dict[str, list[int]]
    started: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    tree_before: float = 0.0
    machine_before: float = 0.0

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self.before = {name: cpu_seconds(pids) for name, pids in self.pids.items()}
        self.tree_before = cpu_seconds(tree_pids())
        self.machine_before = machine_busy_seconds()
        return self

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        used = {n: cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}
        # children that exited inside the window drop out of the tree sum: "other" is
        # then over-counted, never under-counted
        ours = cpu_seconds(tree_pids()) - self.tree_before
        machine = machine_busy_seconds() - self.machine_before
        result: dict[str, Any] = {f"{n}_cpu_pct": pct(s, wall) for n, s in used.items()}
        result["window_s"] = round(wall, 2)
        result["bench_tree_cpu_pct"] = pct(ours, wall)
        result["machine_cpu_pct"] = pct(machine, wall)
        result["other_cpu_pct"] = pct(max(0.0, machine - ours), wall)
        return result
