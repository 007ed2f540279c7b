"""`python -m bench.composer`: see the package's docstring and bench/README.md."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench.composer
from bench.common.paths import REPO, RESULTS_DIR
from bench.common.quiet import Quiet
from bench.common.results import machine_info
from bench.composer import bentoml, graph, hop, profile, smoke, soak
from bench.composer.run import SCENARIOS, Run
from bench.composer.stacks import modelyard_stack
from bench.composer.stream import stream
from bench.composer.tls import tls
from bench.composer.tracing import tracing
from bench.composer.whatif import whatif

RESULTS = RESULTS_DIR / "composer.json"
EXAMPLE_STACK = REPO / "examples" / "stack.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.composer",
        description=bench.composer.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the goal levels")
    parser.add_argument("--profile", action="store_true", help="py-spy the stack (+45 s)")
    parser.add_argument(
        "--whatif", action="store_true", help="the graph with the generators placed the other way"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of a few requests on one stack of stand-in models, no BentoML, no "
        "profiling: checks that the bench runs, measures nothing",
    )
    args = parser.parse_args(argv)
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := args.only - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}: use {SCENARIOS}")
    return args


def prepare_models() -> Path:
    """tools.demo_models in a child (this process never imports torch)."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.demo_models"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    paths = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
    return Path(paths["tiny-gpt2"]).parent


def measured(run: Run) -> None:
    """The scenarios as measured: hop and the soak on stacks of their own; the seed graph
    on examples/stack.yaml, started at the same time as BentoML; streaming on that stack;
    tracing and TLS on stacks of examples/stack.yaml of their own."""
    if "soak" in run.only:
        soak.soak(run, soak.write_stack(run.workdir / "soak"))
    if "hop" in run.only:
        with modelyard_stack(
            hop.write_stack(run.workdir / "hop"), run.workdir / "hop-state", hop.STACK_ENV
        ) as procs:
            hop.hop(run, procs)
    if not run.only & {"graph", "stream", "tracing", "tls"}:
        return
    models = prepare_models()
    if "tracing" in run.only:  # three stacks of its own, before BentoML takes memory
        tracing(run, EXAMPLE_STACK)
    if "tls" in run.only:  # two stacks of its own, as tracing
        tls(run, EXAMPLE_STACK)
    if not run.only & {"graph", "stream"}:
        return
    if "graph" not in run.only:
        with modelyard_stack(EXAMPLE_STACK, run.workdir / "stack") as procs:
            stream(run, procs)
        return
    bentoml.ensure_venv(run.workdir / "bentoml-install.log")
    state = run.workdir / "graph"
    state.mkdir(parents=True, exist_ok=True)
    # BentoML first: it takes 25-50 s to serve, the stack 10-15 s
    started = time.monotonic()
    bento = bentoml.start(state, models, "bentoml-default", None)
    try:
        with modelyard_stack(EXAMPLE_STACK, state / "stack") as procs:
            ready_s = {"modelyard": time.monotonic() - started}
            bentoml.wait_ready(bento)
            ready_s["bentoml"] = time.monotonic() - started
            graph.compare(run, procs, bento, ready_s, models)
            if "stream" in run.only:
                stream(run, procs)
            if run.whatif:
                whatif(run, procs)
    finally:
        bentoml.stop(bento)


def smoked(run: Run) -> None:
    """Every scenario on one stack of stand-ins (tracing on three, TLS on two), without
    BentoML; the soak on its own stacks (they need no model but SlowEcho)."""
    if run.only & {"hop", "graph", "stream"}:
        started = time.monotonic()
        stack_file = smoke.write_stack(run.workdir / "smoke")
        with modelyard_stack(stack_file, run.workdir / "state") as procs:
            ready_s = {"modelyard": time.monotonic() - started}
            if "hop" in run.only:
                hop.hop(run, procs)
            if "graph" in run.only:
                graph.compare(run, procs, None, ready_s, None)
            if "stream" in run.only:
                stream(run, procs)
    if "soak" in run.only:
        soak.soak(run, soak.write_stack(run.workdir / "soak"))
    if "tracing" in run.only:
        tracing(run, smoke.write_tracing_stack(run.workdir / "tracing-smoke"))
    if "tls" in run.only:
        tls(run, smoke.write_tracing_stack(run.workdir / "tls-smoke"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the stacks inherit this environment: tracing is on only where a scenario turns it on
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    started = time.monotonic()
    if args.profile and not args.smoke:  # this run's folded stacks only
        profile.RESULTS.unlink(missing_ok=True)
    machine = machine_info("torch", "transformers")
    machine["bentoml"] = bentoml.VERSION
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        run = Run(
            Path(tmp),
            1 if args.smoke else max(1, args.rounds),
            profile=args.profile and not args.smoke,
            only=args.only,
            whatif=args.whatif and not args.smoke,
            smoke=args.smoke,
        )
        if args.smoke:
            run.quiet = Quiet(budget_s=0.0)
        run.recorder.emit(machine)
        if args.smoke:
            smoked(run)
        else:
            measured(run)
        run.recorder.finish(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
