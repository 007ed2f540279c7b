"""`python -m bench.worker`: see the package's docstring and bench/README.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bench.worker
from bench.common.paths import RESULTS_DIR
from bench.common.quiet import Quiet
from bench.common.results import machine_info
from bench.worker.batching import batching
from bench.worker.memory import memory
from bench.worker.models import Checkpoints, build_checkpoints
from bench.worker.overhead import overhead
from bench.worker.predict_many import predict_many
from bench.worker.rss import peak_rss
from bench.worker.run import Run
from bench.worker.streaming import streaming

RESULTS = RESULTS_DIR / "worker.json"
SCENARIOS = ("overhead", "predict_many", "batching", "rss", "memory", "streaming")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker",
        description=bench.worker.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of each goal level: Echo c=1 and c=16, batching c=1 and c=32 "
        "(medians reported)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of a few requests, Echo standing in for the checkpoints: "
        "checks that the bench runs, measures nothing",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def run_scenarios(run: Run, only: list[str]) -> None:
    if "overhead" in only:
        overhead(run)
    if "predict_many" in only:
        predict_many(run)
    if {"batching", "rss", "memory", "streaming"} & set(only):
        checkpoints: Checkpoints = None
        if not run.smoke:
            checkpoints = build_checkpoints(run.workdir / "models")
        if "batching" in only:
            batching(run, checkpoints)
        if "rss" in only:
            peak_rss(run, checkpoints)
        if "memory" in only:
            memory(run, checkpoints)
        if "streaming" in only:
            streaming(run, checkpoints)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        rounds = 1 if args.smoke else max(1, args.rounds)
        quiet = Quiet(budget_s=0.0) if args.smoke else Quiet()
        run = Run(Path(tmp), rounds, smoke=args.smoke, quiet=quiet)
        run.recorder.emit(machine_info("torch", "transformers"))
        run_scenarios(run, args.only)
        run.recorder.finish(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
