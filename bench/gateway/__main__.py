"""`python -m bench.gateway`: see the package's docstring and bench/README.md."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import bench.gateway
from bench.common.paths import RESULTS_DIR
from bench.common.quiet import Quiet
from bench.common.results import machine_info
from bench.gateway.run import Run
from bench.gateway.stack import build_checkpoint, chat_model, gateway_stack
from bench.gateway.streaming import streaming

RESULTS = RESULTS_DIR / "gateway.json"
# one OpenMP thread per process: on 2 cores torch's default oversubscribes the machine
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=bench.gateway.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    parser.add_argument("--tokens", type=int, default=48, help="tokens per answer")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of a few streams on a stand-in model: checks that the bench runs, "
        "measures nothing",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    os.environ.update(ENV)  # the servers inherit it
    machine = machine_info("torch", "transformers", "fastapi", "uvicorn", "openai")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        run = Run(workdir, 1 if args.smoke else max(1, args.rounds), args.tokens, smoke=args.smoke)
        if args.smoke:
            run.quiet = Quiet(budget_s=0.0)
            run.tokens = min(run.tokens, 8)
        run.recorder.emit(machine)
        checkpoint = None if args.smoke else build_checkpoint(workdir)
        with gateway_stack(workdir, chat_model(checkpoint)) as stack:
            streaming(run, stack)
        run.recorder.finish(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
