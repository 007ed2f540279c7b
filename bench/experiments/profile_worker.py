"""Where a worker's time goes: a py-spy profile under load, and what-if comparisons.

    python -m bench.experiments.profile_worker profile --target echo        # Echo at c=16
    python -m bench.experiments.profile_worker profile --target sentiment   # batched, c=32
    python -m bench.experiments.profile_worker whatif --target echo --rounds 3
    python -m bench.experiments.profile_worker whatif --target echo --smoke # does it run?

`profile` samples the worker with `py-spy record --gil` (only the thread holding the GIL is
sampled: on a GIL-bound server that is where throughput goes) while the load generator
drives it, then sorts every sample into a component (gRPC core, thread hop, metrics, ...).
`whatif` runs the real worker next to variants with one cost patched out
(bench/experiments/patched_worker.py) in alternating rounds, so each cost is measured, not
guessed. Results go to bench/results/profile-TARGET.json and whatif-TARGET.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import profiling
from bench.common.load.driver import Level, run_load
from bench.common.paths import RESULTS_DIR
from bench.common.profiling import Stack
from bench.common.quiet import Quiet
from bench.common.servers import Command, Program, Server, serving, worker, write_worker_config
from bench.common.stats import alternate
from bench.worker.models import (
    BATCH_OFF,
    BATCH_ON,
    ECHO_INPUTS,
    ECHO_MODEL,
    SENTIMENT_INPUTS,
    Checkpoints,
    build_checkpoints,
    sentiment_model,
)
from bench.worker.overhead import ECHO_SERVER
from bench.worker.run import load_spec


def anywhere(*markers: str) -> Callable[[Stack], bool]:
    return lambda stack: any(marker in frame for frame in stack for marker in markers)


def at_leaf(prefix: str) -> Callable[[Stack], bool]:
    return lambda stack: bool(stack) and stack[-1].startswith(prefix)


# Components, most specific first: a sample belongs to the first that matches its stack.
COMPONENTS: tuple[tuple[str, Callable[[Stack], bool]], ...] = (
    ("metrics (prometheus_client)", anywhere("prometheus_client/")),
    ("value conversion (modelyard/values.py)", anywhere("modelyard/values.py")),
    ("model forward (torch.nn modules)", anywhere("torch/nn/", "transformers/models/")),
    (
        "pipeline pre/post-processing (transformers, tokenizers, DataLoader)",
        anywhere("transformers/", "tokenizers", "torch/utils/data/", "workers/hf/"),
    ),
    (
        "thread hop (run_in_executor, cross-thread wake-ups)",
        anywhere(
            "run_in_executor",
            "concurrent/futures/",
            "_write_to_self",
            "_read_from_self",
            "call_soon_threadsafe",
            "_chain_future",
            "_copy_future_state",
        ),
    ),
    ("batcher (workers/batching.py)", anywhere("workers/batching.py")),
    (
        "handler code (workers/, modelyard/, echo server)",
        anywhere("workers/", "modelyard_server/grpc_errors", "bench/worker/echo_server.py"),
    ),
    # GIL held inside a C callback the loop runs: gRPC's Cython/C core, shared with the
    # bare echo server (it is most of that server's time too).
    ("gRPC core (C callbacks run by the loop)", at_leaf("Handle._run (asyncio/events.py")),
    ("asyncio machinery (loop, selector, tasks)", anywhere("asyncio/", "(selectors.py:")),
)


@dataclass(frozen=True)
class Target:
    """What to load: a worker config's models and the load that exercises them."""

    name: str
    models: Callable[[Path, bool], list[dict[str, Any]]]  # (workdir, smoke) -> models
    model: str
    inputs: list[dict[str, Any]]
    level: Level


def echo_models(workdir: Path, smoke: bool) -> list[dict[str, Any]]:
    return ECHO_MODEL


def sentiment_models(workdir: Path, smoke: bool) -> list[dict[str, Any]]:
    checkpoints: Checkpoints = None if smoke else build_checkpoints(workdir / "models")
    return [
        sentiment_model("sentiment-batched", checkpoints, BATCH_ON),
        sentiment_model("sentiment-unbatched", checkpoints, BATCH_OFF),
    ]


TARGETS = {
    "echo": Target("echo", echo_models, "echo", ECHO_INPUTS, Level(16, 10**6, 500)),
    "sentiment": Target(
        "sentiment", sentiment_models, "sentiment-batched", SENTIMENT_INPUTS, Level(32, 10**6, 500)
    ),
}


# -- profile ------------------------------------------------------------------------------


def component(stack: Stack) -> str:
    return next((name for name, matches in COMPONENTS if matches(stack)), "other")


def summarise(samples: list[tuple[Stack, int]], rate: int, seconds: float) -> dict[str, Any]:
    total = sum(count for _, count in samples) or 1
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for stack, count in samples:
        parts[component(stack)] += count
        leaves[stack[-1]] += count
    return {
        "samples": total,
        # samples / possible samples: how much of the wall time some thread held the GIL
        "gil_held_pct": round(100 * total / (rate * seconds), 1),
        "components_pct_of_gil_time": {
            k: round(100 * v / total, 1) for k, v in parts.most_common()
        },
        "top_leaf_frames_pct": {k: round(100 * v / total, 1) for k, v in leaves.most_common(15)},
    }


def record_after(pid: int, out: Path, rate: int, seconds: float, delay: float) -> threading.Thread:
    """Starts py-spy after `delay` (the load generator's warm-up), in a thread."""

    def run() -> None:
        time.sleep(delay)
        recorder = profiling.record(pid, seconds, out, rate=rate, gil=True)
        if error := profiling.finish(recorder, seconds + 30):
            print(f"py-spy: {error}", file=sys.stderr)  # `profile` then finds no samples

    thread = threading.Thread(target=run, name="py-spy")
    thread.start()
    return thread


def profile(target: Target, workdir: Path, rate: int, seconds: float) -> dict[str, Any]:
    config = write_worker_config(workdir / "worker.yaml", target.models(workdir, False))
    raw = workdir / "profile.raw"
    with serving("worker", worker(config), workdir) as served:
        spy = record_after(served.pid, raw, rate, seconds, delay=2.0)
        level = Level(target.level.concurrency, 10**6, target.level.warmup, seconds + 3.5)
        load = run_load(load_spec(served, target.model, target.inputs, level))
        spy.join()
    keep = ("throughput_rps", "p50_ms", "server_cpu_ms_per_req", "other_cpu_pct")
    return {
        "target": target.name,
        "model": target.model,
        "concurrency": target.level.concurrency,
        "load_while_profiling": {k: load[k] for k in keep},
        "note": "py-spy --gil --nonblocking: only the GIL-holding thread is sampled",
        **summarise(profiling.read_folded(raw), rate, seconds),
    }


# -- what-if ------------------------------------------------------------------------------

ECHO_VARIANTS = ("", "nometrics", "nointerceptor", "nometrics,nointerceptor")
SENTIMENT_VARIANTS = ("", "nometrics")


def patched(config: Path, variants: str) -> Program:
    return Program(
        "bench.experiments.patched_worker",
        ("--variants", variants, "worker", "--config", str(config)),
    )


def whatif_levels(target: Target) -> list[tuple[str, Level]]:
    if target.name == "echo":
        return [("echo", Level(1, 2000, 300)), ("echo", Level(16, 8000, 800))]
    return [
        ("sentiment-unbatched", Level(1, 400, 50)),
        ("sentiment-unbatched", Level(32, 1500, 200)),
        ("sentiment-batched", Level(32, 3000, 400)),
    ]


def whatif(target: Target, workdir: Path, rounds: int, smoke: bool) -> dict[str, Any]:
    config = write_worker_config(workdir / "worker.yaml", target.models(workdir, smoke))
    variants = ECHO_VARIANTS if target.name == "echo" else SENTIMENT_VARIANTS
    if smoke:  # the worker as is and the last variant (it patches the most), one level
        variants = (variants[0], variants[-1])
    commands: dict[str, Command] = {
        variant or "worker as is": patched(config, variant) for variant in variants
    }
    if target.name == "echo":
        commands = {"bare echo server": ECHO_SERVER, **commands}
    quiet = Quiet(budget_s=0.0 if smoke else 60.0)
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(serving(f"v{i}", command, workdir))
            for i, (name, command) in enumerate(commands.items())
        }
        table = {}
        levels = whatif_levels(target)
        for model, level in levels[:1] if smoke else levels:
            at = level.smoke() if smoke else level
            measures = {name: measure(quiet, s, model, target, at) for name, s in servers.items()}
            table[f"{model} c={level.concurrency}"] = compact(alternate(measures, rounds))
    return {"target": target.name, "rounds": rounds, "medians": table}


def measure(
    quiet: Quiet, server: Server, model: str, target: Target, level: Level
) -> Callable[[], dict[str, Any]]:
    extra = {"expect_echo": True} if target.name == "echo" else {}
    spec = load_spec(server, model, target.inputs, level, **extra)
    return lambda: quiet.measure(lambda: run_load(spec))


def compact(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_req", "other_cpu_pct")
    return {name: {k: r[k] for k in keys} for name, r in results.items()}


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.experiments.profile_worker",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("command", choices=("profile", "whatif"))
    parser.add_argument("--target", choices=tuple(TARGETS), default="echo")
    parser.add_argument("--rounds", type=int, default=3, help="whatif: alternating rounds")
    parser.add_argument("--seconds", type=float, default=6.0, help="profile: sampling time")
    parser.add_argument("--rate", type=int, default=250, help="profile: samples per second")
    parser.add_argument("--output", type=Path, help="default: bench/results/COMMAND-TARGET.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="whatif: one round of a few requests (Echo standing in for checkpoints)",
    )
    args = parser.parse_args(argv)
    if args.smoke and args.command != "whatif":
        parser.error("--smoke runs `whatif` only: `profile` needs py-spy and time")
    target = TARGETS[args.target]
    with tempfile.TemporaryDirectory(prefix="modelyard-profile-") as tmp:
        if args.command == "profile":
            result = profile(target, Path(tmp), args.rate, args.seconds)
        else:
            rounds = 1 if args.smoke else max(1, args.rounds)
            result = whatif(target, Path(tmp), rounds, args.smoke)
    out = args.output or RESULTS_DIR / f"{args.command}-{target.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
