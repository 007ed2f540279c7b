"""Where the stack's time goes: py-spy on the composer and on each worker at once, while
the load generator drives the composer (`python -m bench.composer --profile`).

py-spy samples every thread that is running Python or native code at 100 Hz, without
stopping the process. Each sample is put into the component (below) of its innermost frame
that matches one; the folded stacks go to bench/results/composer-profile.json.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import profiling
from bench.common.load.driver import run_load
from bench.common.paths import REPO, RESULTS_DIR
from bench.composer.stacks import StackProcs

RESULTS = RESULTS_DIR / "composer-profile.json"
RATE_HZ = 100

# Leaf frames where a thread waits rather than works. py-spy (without --gil) counts a thread
# as active whenever the OS says it runs; in this container that includes an event loop in
# epoll_wait and executor threads parked on their queue, so those samples are set apart.
IDLE_LEAVES = (
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py:81)",
    "Thread.run (threading.py:982)",
    "Condition.wait",
    "Event.wait",
    "SimpleQueue.get",
)
# A loop callback as the leaf frame: a C callback of grpc.aio's core (as in
# bench/experiments/profile_worker.py), its Python caller being the event loop.
GRPC_CORE_LEAF = "Handle._run (asyncio/events.py"
# Self time: a sample belongs to the component of its innermost frame that matches one;
# within a frame, the first component in this order wins.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("thread hop (executor, cross-thread wake-ups)",
     ("_write_to_self", "call_soon_threadsafe", "concurrent/futures/", "run_in_executor")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("value conversion (modelyard/values.py)", ("modelyard/values.py",)),
    ("gRPC (grpc.aio calls, Cython layer)", ("grpc/", "grpc_")),
    ("streamer: incremental decode", ("workers/hf/tasks/text_streaming.py",)),
    ("model forward (torch / transformers modules)",
     ("torch/nn/", "pytorch_utils", "activations.py", "modeling_", "sdpa_attention",
      "masking_utils")),
    ("generate: decoding loop (transformers generation)", ("transformers/generation",)),
    ("tokenizers", ("tokeniz",)),
    ("other torch / transformers", ("torch/", "transformers/")),
    ("worker batching", ("workers/batching.py",)),
    ("worker servicer, service, runner", ("workers/",)),
    ("composer plan (graph checks, every run)", ("composer/plan.py",)),
    ("composer calls (retries, timeouts)", ("composer/calls.py",)),
    ("composer engine", ("composer/engine.py", "composer/streams.py", "composer/events.py")),
    ("composer servicer and service", ("composer/",)),
    ("routed client, balancer", ("modelyard/routed_client.py", "modelyard/balancing.py",
                                 "modelyard/selectors.py", "modelyard/endpoint")),
    ("other modelyard", ("modelyard/",)),
    ("asyncio machinery", ("asyncio/", "selectors.py")),
    ("threading", ("threading.py",)),
)  # fmt: skip


def component(frames: list[str]) -> str:
    leaf = frames[-1]
    if any(leaf.startswith(idle) for idle in IDLE_LEAVES):
        return "(idle: waiting in epoll or on a queue)"
    if leaf.startswith(GRPC_CORE_LEAF):
        return "gRPC core (C callbacks run by the loop)"
    for frame in reversed(frames):
        for name, markers in COMPONENTS:
            if any(marker in frame for marker in markers):
                return name
    return "other"


def summarise(folded: Path, duration_s: float) -> dict[str, Any]:
    """Component shares (in % of the working samples; idle ones apart) and top leaf frames."""
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = idle = 0
    for frames, count in profiling.read_folded(folded):
        name = component(frames)
        if name.startswith("(idle"):
            idle += count
            continue
        total += count
        components[name] += count
        leaves[frames[-1]] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "idle_samples": idle,
        # working threads on average (sampled, approximate)
        "busy_cores": round(total / (RATE_HZ * duration_s), 2) if duration_s else 0.0,
        "components_pct": {name: share(n) for name, n in components.most_common()},
        "top_leaf_frames_pct": {frame: share(n) for frame, n in leaves.most_common(12)},
    }


def profile_stack(
    procs: StackProcs, spec: dict[str, Any], workdir: Path, what: str, seconds: int = 8
) -> dict[str, Any]:
    """Records the composer and every worker for `seconds` while `spec`'s load runs (as
    many requests as fit in that time, after a short warm-up)."""
    targets = {
        name: pid
        for name, pid in procs.pids.items()
        if name == "composer" or name.startswith("worker")
    }
    duration = seconds
    spec = {**spec, "requests": 100_000, "warmup": spec["concurrency"], "time_cap_s": seconds}
    recorders: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, pid in targets.items():
        out = workdir / f"profile-{what}-{name.replace(' ', '-')}.folded"
        recorders[name] = profiling.record(pid, duration, out, rate=RATE_HZ), out
    time.sleep(0.5)  # py-spy attaches
    load = run_load(spec)
    profiles: dict[str, Any] = {}
    folded: dict[str, list[str]] = {}
    for name, (recorder, out) in recorders.items():
        error = profiling.finish(recorder, duration + 30)
        if out.exists():
            profiles[name] = summarise(out, duration)
            lines = out.read_text(errors="replace").splitlines()
            lines.sort(key=lambda line: -int(line.rpartition(" ")[2] or 0))
            folded[f"{what}: {name}"] = lines[:300]
        else:
            profiles[name] = {"error": error or "py-spy wrote nothing"}
    with contextlib.suppress(OSError, ValueError):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({**saved, **folded}, indent=1) + "\n")
    return {
        "bench": "composer_profile",
        "scenario": f"py-spy of the stack: {what}, c={spec['concurrency']}",
        "duration_s": duration,
        "load": {k: v for k, v in load.items() if k != "sample"},
        "profiles": profiles,
        "folded_stacks": str(RESULTS.relative_to(REPO)),
    }
