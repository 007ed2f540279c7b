"""The control plane's py-spy profile, summarised by function: by self time (the leaf
frame, where the CPU actually burned) and by inclusive time (anywhere on the stack: which
caller is expensive)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common.profiling import read_folded

# On every stack, so ranked by self time only: the event loop, the runner, the CLI.
# (py-spy names files relative to sys.path: "asyncio/events.py", "controlplane/hub.py".)
_EVERYWHERE = (
    "asyncio/", "<frozen", "threading.py", "selectors.py", "lib/python", "modelyard_cli/",
    "bench/controlplane/gc_probe.py", "typer/", "click/",
)  # fmt: skip
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


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


def summary(folded: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive share of the samples (percent)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for stack, count in read_folded(folded):
        frames = [frame_name(f) for f in stack]
        total += count
        own[frames[-1]] += count
        for name in {f for f in frames if not f.startswith(_EVERYWHERE)}:
            anywhere[name] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "self_pct": [[name, share(n)] for name, n in own.most_common(top)],
        "inclusive_pct": [[name, share(n)] for name, n in anywhere.most_common(top)],
    }
