"""py-spy against a running process, summarised: where the CPU went, by function.

`record` samples in the background while the bench keeps driving the process; `summary`
reads py-spy's collapsed stacks ("frame;frame;... count", a frame being
"function (file:line)") and ranks functions by self time (the leaf frame: where the CPU
actually burned) and by inclusive time (anywhere on the stack: which caller is expensive).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# py-spy names files relative to sys.path ("asyncio/events.py", "controlplane/hub.py")
_EVERYWHERE = (
    "asyncio/", "<frozen", "threading.py", "selectors.py", "lib/python", "modelyard/cli",
    "bench/cp_gc_probe.py", "typer/", "click/",
)  # fmt: skip
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Starts py-spy on `pid` for `seconds`; wait on the returned process to finish."""
    binary = py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    # --nonblocking: pausing the target at every sample would slow it and skew latencies
    argv = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(rate), "--format", "raw", "--nonblocking",
            "--output", str(output)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def frame_name(frame: str) -> str:
    """'recompute (/repo/controlplane/hub.py:71)' -> 'controlplane/hub.py:recompute'."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("/site-packages/", "/controlplane/", "/modelyard/", "/workers/", "/lib/python"):
        at = path.find(marker)
        if at >= 0:
            path = path[at + 1 :] if marker != "/site-packages/" else path[at + 15 :]
            break
    return f"{path}:{match['function']}"


def save_stacks(collapsed: Path, output: Path) -> Path:
    """py-spy's collapsed stacks as JSON ({"stacks": {stack: samples}}), for a flame graph
    tool or a second look; returns `output`."""
    stacks: dict[str, int] = {}
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"format": "py-spy collapsed stacks", "stacks": stacks}))
    return output


def summary(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive share of the samples (percent)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        # the event loop and the runner are on every stack: rank only what they run
        for name in {f for f in frames if not f.startswith(_EVERYWHERE)}:
            anywhere[name] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "self_pct": [[name, share(n)] for name, n in own.most_common(top)],
        "inclusive_pct": [[name, share(n)] for name, n in anywhere.most_common(top)],
    }
