"""composer_graph: the seed inference graph through the composer vs BentoML.

`examples/stack.yaml` (deployed `inference-graph`: gpt2 and distilgpt2 generate 16 tokens
from one prompt in parallel, then bert scores each text) vs the BentoML service, both up
at once. Levels c=1 and c=16, then c=16 once more against BentoML without its session
recycling. A smoke run has no BentoML: the lines then carry modelyard's side only.

Goals: issue 4's (c=16: >= 2x BentoML's throughput, a lower p99, 0 failed requests) and
issue 12's stricter ones, in the same lines: c=16 >= 5x, and c=1 a p50 <= 0.8x BentoML's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common.cpu import idle_cpu_pct
from bench.common.load.driver import Level
from bench.common.memory import RssSampler
from bench.common.stats import alternate, clean, ratio
from bench.composer import bentoml
from bench.composer.bentoml import BentoServer
from bench.composer.probe import placement_probe
from bench.composer.rss import rss_record
from bench.composer.run import PROMPT, Run, without_sample
from bench.composer.stacks import StackProcs

GRAPH = "inference-graph"
LEVELS = (Level(1, 40, 5, 30.0), Level(16, 320, 32, 40.0))
GOAL_RATIO = 2.0  # issue 4
GOAL_RATIO_NOW = 5.0  # issue 12, with the example stack's batching
GOAL_IDLE_P50_RATIO = 0.8  # issue 12: c=1 p50 vs BentoML's
NO_RECYCLING = 1_000_000  # runner_connection.max_requests for the tuned BentoML run
BASELINE_NAME = f"BentoML {bentoml.VERSION}, 4 services (bentoml.depends), transformers pipelines"
NO_BASELINE = "smoke run: BentoML not started"


def modelyard_spec(level: Level, procs: StackProcs) -> dict[str, Any]:
    return level.spec(
        kind="run",
        address=procs.composer,
        graph=GRAPH,
        inputs=[{"prompt": PROMPT}],
        server_pids=list(procs.pids.values()),
    )


def bentoml_spec(level: Level, server: BentoServer) -> dict[str, Any]:
    return level.spec(
        kind="http",
        url=f"{server.url}/run",
        inputs=[{"prompt": PROMPT}],
        server_pids=list(server.pids().values()),
    )


def same_outputs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same texts and labels; scores equal to 1e-4 (float32 vs the JSON round trip)."""
    for name in ("gpt2", "distilgpt2"):
        if a.get(f"{name}_text") != b.get(f"{name}_text"):
            return False
        sa, sb = a.get(f"{name}_score") or {}, b.get(f"{name}_score") or {}
        if sa.get("labels") != sb.get("labels"):
            return False
        if not all(
            math.isclose(x, y, abs_tol=1e-4)
            for x, y in zip(sa.get("scores", []), sb.get("scores", []), strict=True)
        ):
            return False
    return True


def compare(
    run: Run,
    procs: StackProcs,
    bento: BentoServer | None,
    ready_s: dict[str, float],
    models: Path | None,
) -> None:
    """The rounds at every level, the probe, the tuned BentoML run and the RSS line.
    `ready_s`: how long each system took to serve; `models`: BentoML's checkpoints."""
    idle_s = 0.5 if run.smoke else 2.0
    idle = {"modelyard_stack_idle_cpu_pct": idle_cpu_pct(list(procs.pids.values()), idle_s)}
    stack_rss = RssSampler(procs.pids)
    bento_rss = RssSampler(bento.pids()) if bento is not None else None
    at_ready = stack_rss.snapshot(), bento_rss.snapshot() if bento_rss is not None else {}
    if bento is not None:
        idle["bentoml_idle_cpu_pct"] = idle_cpu_pct(list(bento.pids().values()), idle_s)
    for level in map(run.level, LEVELS):
        measures = {"modelyard": sampled(run, stack_rss, modelyard_spec(level, procs))}
        if bento is None or bento_rss is None:
            results = alternate(measures, run.rounds)
        else:
            measures["bentoml"] = sampled(run, bento_rss, bentoml_spec(level, bento))
            errors_before = bentoml.server_errors(bento)
            results = alternate(measures, run.rounds)
            errors = bentoml.server_errors(bento) - errors_before
            results["bentoml"]["server_errors"] = dict(errors)
        run.recorder.emit(record(level, results, bento, idle))
    run.recorder.emit(placement_probe(run, procs))
    if run.profile:
        from bench.composer.profile import profile_stack

        spec = modelyard_spec(LEVELS[-1], procs)
        run.recorder.emit(profile_stack(procs, spec, run.workdir, GRAPH))
        spec = modelyard_spec(LEVELS[0], procs)
        run.recorder.emit(profile_stack(procs, spec, run.workdir, f"{GRAPH}-c1"))
    if bento is not None and models is not None:
        # the same c=16 goal against BentoML without its session recycling (a restart)
        bentoml.stop(bento)
        tuned_against(run, procs, models, idle)
    run.recorder.emit(rss_record(procs, stack_rss, bento_rss, at_ready, ready_s))


def sampled(run: Run, sampler: RssSampler, spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A measurement during which `sampler` samples its processes' RSS."""

    def measure() -> dict[str, Any]:
        with sampler:
            return run.measure(spec)

    return measure


def tuned_against(run: Run, procs: StackProcs, models: Path, idle: dict[str, float]) -> None:
    tuned = bentoml.start(run.workdir / "graph", models, "bentoml-tuned", NO_RECYCLING)
    try:
        bentoml.wait_ready(tuned)
        level = run.level(LEVELS[-1])
        results = alternate(
            {
                "modelyard": run.measurer(modelyard_spec(level, procs)),
                "bentoml": run.measurer(bentoml_spec(level, tuned)),
            },
            1,
        )
        results["bentoml"]["server_errors"] = dict(bentoml.server_errors(tuned))
        run.recorder.emit(record(level, results, tuned, idle, tuned=True))
    finally:
        bentoml.stop(tuned)


def record(
    level: Level,
    results: dict[str, dict[str, Any]],
    bento: BentoServer | None,
    idle: dict[str, float],
    *,
    tuned: bool = False,
) -> dict[str, Any]:
    mine, theirs = results["modelyard"], results.get("bentoml")
    checks = {"modelyard: 0 failed requests": clean(mine)}
    goal = "informational (pass = modelyard had 0 failed requests and both gave the same outputs)"
    baseline: dict[str, Any] = {"name": BASELINE_NAME, "skipped": NO_BASELINE}
    gain = None
    if theirs is not None and bento is not None:
        gain = ratio(mine["throughput_rps"], theirs["throughput_rps"])
        checks["same outputs from both"] = same_outputs(mine["sample"], theirs["sample"])
        baseline = {"name": BASELINE_NAME, "settings": bento.settings, **without_sample(theirs)}
        if level.concurrency > 1:
            goal = (
                f"modelyard >= {GOAL_RATIO:g}x (issue 4) and >= {GOAL_RATIO_NOW:g}x (issue 12) "
                f"BentoML's throughput at c={level.concurrency}, lower p99, 0 failed requests"
            )
            if tuned:
                goal = "informational: the same goal against BentoML without session recycling"
            checks[f"throughput >= {GOAL_RATIO:g}x"] = (gain or 0.0) >= GOAL_RATIO
            checks[f"throughput >= {GOAL_RATIO_NOW:g}x"] = (gain or 0.0) >= GOAL_RATIO_NOW
            checks["p99 lower than BentoML's"] = mine["p99_ms"] < theirs["p99_ms"]
        elif not tuned:
            goal = f"modelyard's p50 <= {GOAL_IDLE_P50_RATIO:g}x BentoML's at c=1 (issue 12)"
            p50_ratio = ratio(mine["p50_ms"], theirs["p50_ms"])
            checks[f"p50 <= {GOAL_IDLE_P50_RATIO:g}x"] = (
                p50_ratio is not None and p50_ratio <= GOAL_IDLE_P50_RATIO
            )
    return {
        "bench": "composer_graph",
        "scenario": f"seed inference graph, c={level.concurrency}"
        + (", BentoML runner_connection.max_requests raised" if tuned else ""),
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        "modelyard": {"name": f"Composer.Run of the deployed {GRAPH}", **mine},
        "baseline": baseline,
        "throughput_ratio": gain,
        "p50_ratio": ratio(mine["p50_ms"], theirs["p50_ms"]) if theirs else None,
        "p99_ratio": ratio(mine["p99_ms"], theirs["p99_ms"]) if theirs else None,
        **idle,
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }
