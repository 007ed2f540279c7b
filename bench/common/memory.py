"""Resident memory of named processes, sampled in a thread while a context is active.

For each named process it keeps the peak and the mean over samples; for the set, the peak
and the mean of the sum. With `descendants`, the sum also counts every descendant of a
named process (a worker's children): pages they share with their parent are then counted
twice, so it is an upper bound. RSS summed over processes counts shared pages (libtorch,
Python) once in every process that maps them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

import psutil

MB = 1024 * 1024


def rss_bytes(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0  # gone (or exited between listing and reading)


def memory_mb(pid: int) -> dict[str, float]:
    """A process's RSS, PSS (each page shared with n processes counted 1/n) and USS (its
    pages alone), in MB, from /proc/<pid>/smaps: slower than RSS, so not for sampling."""
    info = psutil.Process(pid).memory_full_info()
    return {f"{kind}_mb": round(getattr(info, kind) / MB, 1) for kind in ("rss", "pss", "uss")}


def rss_mb(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        return round(rss_bytes(psutil.Process(pid)) / MB, 1)
    return 0.0


class RssSampler:
    def __init__(
        self,
        pids: Mapping[str, int] | None = None,
        *,
        descendants: bool = False,
        interval_s: float = 0.1,
    ) -> None:
        self._processes: dict[str, psutil.Process] = {}
        self._descendants = descendants
        self._interval = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak: dict[str, int] = {}
        self.sums: dict[str, int] = {}
        self.peak_total = 0
        self.sum_total = 0
        self.last_total = 0
        self.samples = 0
        for name, pid in (pids or {}).items():
            self.attach(name, pid)

    def attach(self, name: str, pid: int) -> None:
        """Samples `pid` as `name` from now on (pass it as a server's `on_spawn`)."""
        with contextlib.suppress(psutil.Error), self._lock:
            self._processes[name] = psutil.Process(pid)
            self.peak.setdefault(name, 0)
            self.sums.setdefault(name, 0)

    def snapshot(self) -> dict[str, int]:
        """Each named process's RSS now, in bytes (0 for one that is gone)."""
        with self._lock:
            processes = dict(self._processes)
        return {name: rss_bytes(process) for name, process in processes.items()}

    def sample(self) -> int:
        """Takes one sample now; returns the set's total in bytes."""
        with self._lock:
            processes = dict(self._processes)
        if not processes:
            return 0
        sizes = {name: rss_bytes(process) for name, process in processes.items()}
        total = sum(sizes.values())
        if self._descendants:
            for process in processes.values():
                with contextlib.suppress(psutil.Error):
                    total += sum(rss_bytes(child) for child in process.children(recursive=True))
        with self._lock:
            for name, size in sizes.items():
                self.peak[name] = max(self.peak[name], size)
                self.sums[name] += size
            self.peak_total = max(self.peak_total, total)
            self.sum_total += total
            self.last_total = total
            self.samples += 1
        return total

    def __enter__(self) -> RssSampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def report(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "peak_total_mb": round(self.peak_total / MB, 1),
            "mean_total_mb": round(self.sum_total / n / MB, 1),
            "peak_mb": {name: round(size / MB, 1) for name, size in self.peak.items()},
            "mean_mb": {name: round(size / n / MB, 1) for name, size in self.sums.items()},
        }
