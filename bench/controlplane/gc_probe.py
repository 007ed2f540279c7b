"""`modelyard controlplane` with its garbage-collector pauses logged: the same process, plus a
`gc.callbacks` hook that writes each collection longer than 5 ms to stderr as

    GCPAUSE <generation> <milliseconds> <time.monotonic() at its start> <objects collected>

With --freeze-on-sigusr1, SIGUSR1 runs one full collection and then `gc.freeze()`: every
object alive then moves to a generation the collector never scans again. The scale bench
sends it once the fleet has converged, as the what-if for a control plane that froze its
start-up heap itself.

    python -m bench.controlplane.gc_probe [--freeze-on-sigusr1] controlplane --etcd HOST:PORT ...
"""

from __future__ import annotations

import gc
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common.servers import run_modelyard_here

REPORT_OVER_S = 0.005
_LINE = re.compile(r"GCPAUSE (\d) ([\d.]+) ([\d.]+) (\d+)")


class PauseLog:
    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
            return
        took = time.monotonic() - self._started
        if took > REPORT_OVER_S:
            line = f"GCPAUSE {info['generation']} {took * 1000:.1f} {self._started:.4f}"
            print(f"{line} {info['collected']}", file=sys.stderr, flush=True)


def freeze(signum: int, frame: FrameType | None) -> None:
    gc.collect()
    gc.freeze()
    print(f"GCFROZEN {gc.get_freeze_count()}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pause:
    generation: int
    ms: float
    at: float  # monotonic


def read_pauses(log: Path) -> list[Pause]:
    """The pauses a probed process logged (for the bench to line up with its changes)."""
    pauses = []
    for line in log.read_text(errors="replace").splitlines():
        match = _LINE.search(line)
        if match:
            pauses.append(Pause(int(match[1]), float(match[2]), float(match[3])))
    return pauses


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--freeze-on-sigusr1":
        signal.signal(signal.SIGUSR1, freeze)
        args = args[1:]
    gc.callbacks.append(PauseLog())
    run_modelyard_here(args)


if __name__ == "__main__":
    main()
