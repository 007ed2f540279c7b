"""Benchmarks of the composer (issue 4), each against a baseline measured in the same run.

    python -m bench.composer_bench                 # everything, 3.5-4.5 minutes on 2 cores
    python -m bench.composer_bench --only hop,stream
    python -m bench.composer_bench --profile       # also py-spy the stack (+45 s)
    python -m bench.composer_bench --whatif        # also the generators on separate workers

Scenarios (see bench/README.md, "Composer (issue 4)"):
  hop     added latency per hop: 3 Echo models as a sequential graph through the composer
          vs the client calling the same 3 workers itself, c=1 and c=16
  graph   the seed inference graph (gpt2 + distilgpt2 in parallel, then bert on each
          text) through the composer vs BentoML 1.4 serving the same graph with the same
          checkpoints, c=1 and c=16; plus the whole stack's RSS meanwhile (scenario 4)
  stream  time to the first downstream result of the streaming graph (gpt2 streaming
          into sentiment, word segments) vs the same graph without streaming

Prints one JSON line per scenario (plus a "machine" line) and writes all of them to
bench/results/composer.json. Every server is a real process on 127.0.0.1; the load
generator (bench/composer_load.py) is another; every loop is bounded by a request count
and a time cap. BentoML runs from its own venv, .cache/bentoml-venv, created on the first
run (about 1.5 min; see bench/composer_procs.py). The exit code is 0 whenever the
measurements ran; the verdicts are in each line's `pass` and in `all_pass`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import procs
from bench.composer_procs import (
    BENTOML_VERSION,
    BentoServer,
    Quiet,
    SetRss,
    StackProcs,
    cpu_idle_pct,
    ensure_bentoml_venv,
    modelyard_stack,
    server_errors,
    start_bentoml,
    stop_bentoml,
    wait_ready,
)
from bench.procs import REPO
from bench.worker_bench import machine_info, ratio

RESULTS = Path(__file__).resolve().parent / "results" / "composer.json"
SCENARIOS = ("hop", "graph", "stream")
PROMPT = "I have an idea!"


@dataclass(frozen=True)
class Level:
    concurrency: int
    requests: int
    warmup: int
    time_cap_s: float = 20.0


@dataclass
class Run:
    workdir: Path
    rounds: int
    profile: bool
    only: set[str] = field(default_factory=lambda: set(SCENARIOS))
    whatif: bool = False
    quiet: procs.Quiet = field(default_factory=Quiet)
    records: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, record: dict[str, Any]) -> None:
        print(json.dumps(record), flush=True)
        self.records.append(record)

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.quiet.run_load(spec)

    def measurer(self, spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: self.measure(spec)


def level_spec(level: Level, **spec: Any) -> dict[str, Any]:
    return {
        "concurrency": level.concurrency,
        "requests": level.requests,
        "warmup": level.warmup,
        "time_cap_s": level.time_cap_s,
        **spec,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; counts summed; per-round values kept."""
    keys = ("p50_ms", "p90_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_req",
            "server_cpu_pct", "client_cpu_pct", "other_cpu_pct")  # fmt: skip
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    for extra in ("total_p50_ms", "total_p99_ms"):
        if extra in runs[0]:
            out[extra] = round(statistics.median(r[extra] for r in runs), 3)
    out["throughput_rps_rounds"] = [r["throughput_rps"] for r in runs]
    out["p50_ms_rounds"] = [r["p50_ms"] for r in runs]
    out["p99_ms_rounds"] = [r["p99_ms"] for r in runs]
    out["requests"] = sum(r["requests"] for r in runs)
    out["ok"] = sum(r["ok"] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    codes: dict[str, int] = {}
    for r in runs:
        for code, count in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + count
    out["error_codes"] = codes
    out["capped"] = any(r["capped"] for r in runs)
    out["disturbed_rounds"] = sum(r["disturbed"] for r in runs)
    out["sample"] = runs[0]["sample"]
    return out


def alternate(
    measures: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, dict[str, Any]]:
    """Each measurement `rounds` times, order reversed every round (drift hits all alike)."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    for index in range(rounds):
        order = list(measures) if index % 2 == 0 else list(reversed(measures))
        for name in order:
            results[name].append(measures[name]())
    return {name: summary(runs) for name, runs in results.items()}


def clean(result: dict[str, Any]) -> bool:
    return result["errors"] == 0 and not result["capped"]


def without_sample(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "sample"}


# -- 1. added latency per hop ---------------------------------------------------------------

ECHO = "tests.support.models:Echo"
HOPS = (("echo-a", "echo1"), ("echo-b", "echo2"), ("echo-c", "echo3"))
HOP_INPUTS = {"text": "The quick brown fox"}
HOP_LEVELS = (Level(1, 800, 150), Level(16, 2000, 300))
HOP_GOAL_MS = 0.5


def echo_chain_graph() -> dict[str, Any]:
    nodes = []
    source = "inputs.text"
    for index, (_, model) in enumerate(HOPS, 1):
        nodes.append({"name": f"e{index}", "model": model, "inputs": {"text": source}})
        source = f"e{index}.text"
    return {
        "name": "echo-chain",
        "description": "three no-op models in sequence (bench.composer_bench)",
        "inputs": {"text": "string"},
        "nodes": nodes,
        "outputs": {"text": source},
    }


def write_hop_stack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "echo-chain.yaml").write_text(yaml.safe_dump(echo_chain_graph(), sort_keys=False))
    workers = [
        {"worker_id": worker, "models": [{"name": model, "class": ECHO}]} for worker, model in HOPS
    ]
    stack = {"workers": workers, "graphs": ["echo-chain.yaml"]}
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def hop(run: Run) -> None:
    stack_file = write_hop_stack(run.workdir / "hop")
    with modelyard_stack(stack_file, run.workdir / "hop" / "state", "hop-stack") as procs:
        pids = list(procs.pids.values())
        addresses = procs.stack.workers
        hops = [[addresses[worker], model] for worker, model in HOPS]
        for level in HOP_LEVELS:
            common = {"inputs": HOP_INPUTS, "expect": HOP_INPUTS, "server_pids": pids}
            composer = level_spec(
                level, kind="run", address=procs.composer, graph="echo-chain", **common
            )
            direct = level_spec(level, kind="chain", hops=hops, **common)
            # the goal's level (c=1, sub-millisecond differences) gets a round more
            rounds = run.rounds + 1 if level.concurrency == 1 else run.rounds
            results = alternate(
                {"composer": run.measurer(composer), "direct": run.measurer(direct)}, rounds
            )
            run.emit(hop_record(level, results["composer"], results["direct"], procs))
        if run.profile:
            from bench.composer_profile import profile_stack

            spec = level_spec(HOP_LEVELS[-1], kind="run", address=procs.composer,
                              graph="echo-chain", inputs=HOP_INPUTS, server_pids=pids)  # fmt: skip
            run.emit(profile_stack(procs, spec, run.workdir, "echo-chain", seconds=6))


def hop_record(
    level: Level, composer: dict[str, Any], direct: dict[str, Any], procs: StackProcs
) -> dict[str, Any]:
    per_hop = {
        q: round((composer[f"{q}_ms"] - direct[f"{q}_ms"]) / len(HOPS), 4)
        for q in ("p50", "p90", "p99")
    }
    checks = {"no errors": clean(composer) and clean(direct)}
    goal = "informational (pass = no errors)"
    if level.concurrency == 1:
        goal = f"added latency per hop (p50) <= {HOP_GOAL_MS} ms at c=1"
        checks[f"per-hop p50 <= {HOP_GOAL_MS} ms"] = per_hop["p50"] <= HOP_GOAL_MS
    return {
        "bench": "composer_hop",
        "scenario": f"3 Echo models in sequence, c={level.concurrency}",
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        "composer": {"name": "Composer.Run of a deployed 3-node graph", **composer},
        "baseline": {
            "name": "the client calls the 3 workers itself, in sequence (same processes)",
            **direct,
        },
        "added_per_hop_ms": per_hop,
        "throughput_ratio": ratio(composer["throughput_rps"], direct["throughput_rps"]),
        "server_cpu_ms_per_req_added": round(
            composer["server_cpu_ms_per_req"] - direct["server_cpu_ms_per_req"], 3
        ),
        "server_processes": procs.pids,
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


# -- 2. the seed inference graph vs BentoML (and 4. the stack's RSS) -------------------------

GRAPH_LEVELS = (Level(1, 40, 5, 30.0), Level(16, 320, 32, 40.0))
GRAPH_GOAL_RATIO = 2.0
NO_RECYCLING = 1_000_000  # runner_connection.max_requests for the tuned BentoML run


def modelyard_graph_spec(level: Level, procs: StackProcs) -> dict[str, Any]:
    return level_spec(
        level,
        kind="run",
        address=procs.composer,
        graph="inference-graph",
        inputs={"prompt": PROMPT},
        server_pids=list(procs.pids.values()),
    )


def bentoml_graph_spec(level: Level, server: BentoServer) -> dict[str, Any]:
    return level_spec(
        level,
        kind="http",
        url=f"{server.url}/run",
        inputs={"prompt": PROMPT},
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


def graph(run: Run, models: Path) -> None:
    state = run.workdir / "graph"
    state.mkdir(parents=True, exist_ok=True)
    ensure_bentoml_venv(run.workdir / "bentoml-install.log")
    # BentoML starts (25-50 s) while the modelyard stack starts (10-15 s)
    started = time.monotonic()
    bento = start_bentoml(state, models, "bentoml-default", None)
    try:
        with modelyard_stack(REPO / "examples" / "stack.yaml", state / "stack", "stack") as procs:
            stack_ready_s = time.monotonic() - started
            wait_ready(bento)
            bento_ready_s = time.monotonic() - started
            graph_rounds(run, procs, bento, stack_ready_s, bento_ready_s, models)
            if "stream" in run.only:
                stream(run, procs)
            if run.whatif:
                whatif_split(run, procs)
    finally:
        stop_bentoml(bento)


def graph_rounds(
    run: Run,
    procs: StackProcs,
    bento: BentoServer,
    stack_ready_s: float,
    bento_ready_s: float,
    models: Path,
) -> None:
    idle = {
        "modelyard_stack_idle_cpu_pct": cpu_idle_pct(list(procs.pids.values())),
        "bentoml_idle_cpu_pct": cpu_idle_pct(list(bento.pids().values())),
    }
    stack_rss, bento_rss = SetRss(procs.pids), SetRss(bento.pids())
    at_ready = stack_rss.snapshot()
    bento_at_ready = bento_rss.snapshot()
    results: dict[Level, dict[str, dict[str, Any]]] = {}
    for level in GRAPH_LEVELS:
        rounds = run.rounds
        modelyard_spec = modelyard_graph_spec(level, procs)
        bento_spec = bentoml_graph_spec(level, bento)

        def modelyard_round(spec: dict[str, Any] = modelyard_spec) -> dict[str, Any]:
            with stack_rss:
                return run.measure(spec)

        def bento_round(spec: dict[str, Any] = bento_spec) -> dict[str, Any]:
            with bento_rss:
                return run.measure(spec)

        errors_before = server_errors(bento)
        results[level] = alternate({"modelyard": modelyard_round, "bentoml": bento_round}, rounds)
        results[level]["bentoml"]["server_errors"] = dict(server_errors(bento) - errors_before)
        run.emit(graph_record(level, results[level], bento, idle))
    run.emit(placement_probe(run, procs))
    if run.profile:
        from bench.composer_profile import profile_stack

        spec = modelyard_graph_spec(GRAPH_LEVELS[-1], procs)
        run.emit(profile_stack(procs, spec, run.workdir, "inference-graph"))
        spec = modelyard_graph_spec(GRAPH_LEVELS[0], procs)
        run.emit(profile_stack(procs, spec, run.workdir, "inference-graph-c1"))
    # The same c=16 goal against BentoML without its session recycling (a restart)
    stop_bentoml(bento)
    tuned = start_bentoml(run.workdir / "graph", models, "bentoml-tuned", NO_RECYCLING)
    try:
        wait_ready(tuned)
        level = GRAPH_LEVELS[-1]
        tuned_results = alternate(
            {
                "modelyard": lambda: run.measure(modelyard_graph_spec(level, procs)),
                "bentoml": lambda: run.measure(bentoml_graph_spec(level, tuned)),
            },
            1,
        )
        tuned_results["bentoml"]["server_errors"] = dict(server_errors(tuned))
        run.emit(graph_record(level, tuned_results, tuned, idle, tuned=True))
    finally:
        stop_bentoml(tuned)
    run.emit(rss_record(procs, stack_rss, at_ready, bento_rss, bento_at_ready,
                        stack_ready_s, bento_ready_s))  # fmt: skip


PROBE_LEVEL = Level(1, 20, 3, 15.0)


def placement_probe(run: Run, procs: StackProcs) -> dict[str, Any]:
    """Why c=1 is slower than BentoML: the two generations of one run share one worker
    process (examples/stack.yaml puts both LLMs on `generators`), so they take turns on
    its GIL. The client calls that worker directly: each model alone, then both at once."""
    address = procs.stack.workers["generators"]
    common = {
        "inputs": {"text": PROMPT},
        "parameters": {"max_new_tokens": 16, "do_sample": False},
        "server_pids": [procs.pids["worker generators"]],
    }
    results = {
        name: summary([run.measure(level_spec(PROBE_LEVEL, kind=kind, hops=hops, **common))])
        for name, kind, hops in (
            ("gpt2 alone", "chain", [[address, "gpt2"]]),
            ("distilgpt2 alone", "chain", [[address, "distilgpt2"]]),
            ("both at once", "fanout", [[address, "gpt2"], [address, "distilgpt2"]]),
        )
    }
    alone = [results["gpt2 alone"]["p50_ms"], results["distilgpt2 alone"]["p50_ms"]]
    both = results["both at once"]["p50_ms"]
    return {
        "bench": "composer_graph_probe",
        "scenario": "the generators worker called directly, 16 new tokens, c=1",
        "p50_ms": {name: r["p50_ms"] for name, r in results.items()},
        "server_cpu_ms_per_req": {name: r["server_cpu_ms_per_req"] for name, r in results.items()},
        "other_cpu_pct": {name: r["other_cpu_pct"] for name, r in results.items()},
        # 1.0: both at once take as long as one after the other; 0.0: fully in parallel
        "serialisation": round((both - max(alone)) / min(alone), 3) if min(alone) else None,
        "goal": "informational (pass = no errors)",
        "checks": {"no errors": all(clean(r) for r in results.values())},
        "pass": all(clean(r) for r in results.values()),
    }


def graph_record(
    level: Level,
    results: dict[str, dict[str, Any]],
    bento: BentoServer,
    idle: dict[str, float],
    *,
    tuned: bool = False,
) -> dict[str, Any]:
    mine, theirs = results["modelyard"], results["bentoml"]
    gain = ratio(mine["throughput_rps"], theirs["throughput_rps"])
    checks = {
        "modelyard: 0 failed requests": clean(mine),
        "same outputs from both": same_outputs(mine["sample"], theirs["sample"]),
    }
    goal = "informational (pass = modelyard had 0 failed requests and both gave the same outputs)"
    if level.concurrency > 1:
        goal = (
            f"modelyard >= {GRAPH_GOAL_RATIO:g}x BentoML's throughput at c={level.concurrency}, "
            "lower p99, 0 failed requests"
        )
        if tuned:
            goal = "informational: the same goal against BentoML without session recycling"
        checks[f"throughput >= {GRAPH_GOAL_RATIO:g}x"] = (gain or 0.0) >= GRAPH_GOAL_RATIO
        checks["p99 lower than BentoML's"] = mine["p99_ms"] < theirs["p99_ms"]
    name = f"BentoML {BENTOML_VERSION}, 4 services (bentoml.depends), transformers pipelines"
    return {
        "bench": "composer_graph",
        "scenario": f"seed inference graph, c={level.concurrency}"
        + (", BentoML runner_connection.max_requests raised" if tuned else ""),
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        "modelyard": {"name": "Composer.Run of the deployed inference-graph", **mine},
        "baseline": {"name": name, "settings": bento.settings, **without_sample(theirs)},
        "throughput_ratio": gain,
        "p50_ratio": ratio(mine["p50_ms"], theirs["p50_ms"]),
        "p99_ratio": ratio(mine["p99_ms"], theirs["p99_ms"]),
        **idle,
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }


def rss_record(
    procs: StackProcs,
    stack_rss: SetRss,
    at_ready: dict[str, int],
    bento_rss: SetRss,
    bento_at_ready: dict[str, int],
    stack_ready_s: float,
    bento_ready_s: float,
) -> dict[str, Any]:
    mb = 1024 * 1024
    stack, bento = stack_rss.report(), bento_rss.report()
    checks = {"sampled during the load": stack["samples"] > 0}
    return {
        "bench": "composer_rss",
        "scenario": "whole modelyard stack (examples/stack.yaml) during the graph scenario",
        "stack": {
            "processes": procs.pids,
            "at_ready_total_mb": round(sum(at_ready.values()) / mb, 1),
            "at_ready_mb": {k: round(v / mb, 1) for k, v in at_ready.items()},
            **stack,
            "ready_after_s": round(stack_ready_s, 1),
        },
        "baseline": {
            "name": "BentoML serving the inference graph alone (4 services + bentoml serve)",
            "at_ready_total_mb": round(sum(bento_at_ready.values()) / mb, 1),
            **bento,
            "ready_after_s": round(bento_ready_s, 1),
        },
        "note": "RSS summed over processes counts shared pages (libtorch, Python) once per "
        "process. The modelyard stack serves 7 models (incl. zero-shot, MiniLM embed) on 2 "
        "workers; BentoML serves only the graph's 3.",
        "goal": "none set: report the whole stack's RSS during scenario 2",
        "checks": checks,
        "pass": all(checks.values()),
    }


# -- what-if: the two generators on separate workers ----------------------------------------


def write_split_stack(folder: Path) -> Path:
    """examples/stack.yaml with distilgpt2 moved from `generators` to a worker of its own."""
    examples = REPO / "examples"
    spec = yaml.safe_load((examples / "stack.yaml").read_text())
    for worker in spec["workers"]:
        for model in worker.get("models", []):
            if str(model.get("source", "")).startswith(("./", "../")):
                model["source"] = str((examples / model["source"]).resolve())
    generators = next(w for w in spec["workers"] if w["worker_id"] == "generators")
    moved = [m for m in generators["models"] if m["name"] == "distilgpt2"]
    generators["models"] = [m for m in generators["models"] if m["name"] != "distilgpt2"]
    spec["workers"].append({"worker_id": "generators-2", "tags": generators.get("tags", {}),
                            "models": moved})  # fmt: skip
    spec["graphs"] = [str(examples / "graphs" / "inference-graph.yaml")]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stack-split.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def whatif_split(run: Run, as_is: StackProcs) -> None:
    """The seed graph on a second stack whose two generators live in separate worker
    processes (their generation loops no longer take turns on one GIL), alternating with
    the stack as is, both up at once (the idle one costs ~3% of a core)."""
    stack_file = write_split_stack(run.workdir / "split")
    with modelyard_stack(stack_file, run.workdir / "split" / "state", "split-stack") as split:
        for level in GRAPH_LEVELS:
            results = alternate(
                {
                    "split": run.measurer(modelyard_graph_spec(level, split)),
                    "as_is": run.measurer(modelyard_graph_spec(level, as_is)),
                },
                run.rounds,
            )
            run.emit(whatif_record(level, results["split"], results["as_is"]))


def whatif_record(level: Level, split: dict[str, Any], as_is: dict[str, Any]) -> dict[str, Any]:
    ok = clean(split) and clean(as_is)
    return {
        "bench": "composer_graph_whatif",
        "scenario": f"seed inference graph, c={level.concurrency}: "
        "gpt2 and distilgpt2 on separate workers",
        "concurrency": level.concurrency,
        "split": {
            "name": "examples/stack.yaml with distilgpt2 on a worker of its own",
            **without_sample(split),
        },
        "baseline": {"name": "examples/stack.yaml as is", **without_sample(as_is)},
        "throughput_ratio": ratio(split["throughput_rps"], as_is["throughput_rps"]),
        "p50_ratio": ratio(split["p50_ms"], as_is["p50_ms"]),
        "goal": "informational (pass = no errors)",
        "checks": {"no errors": ok},
        "pass": ok,
    }


# -- 3. streaming ---------------------------------------------------------------------------

STREAM_DELIMITERS = " "
STREAM_LEVEL = Level(1, 24, 3, 30.0)
STREAM_GOAL = 0.5


def streaming_graphs() -> tuple[dict[str, Any], dict[str, Any]]:
    """examples/graphs/streaming.yaml with word segments (streamed), and without `stream`."""
    base = yaml.safe_load((REPO / "examples" / "graphs" / "streaming.yaml").read_text())
    streamed = copy.deepcopy(base)
    streamed["name"] = "streaming-words"
    nodes = {node["name"]: node for node in streamed["nodes"]}
    nodes["generate"]["parameters"]["max_new_tokens"] = 48
    nodes["sentiment"]["segment_delimiters"] = STREAM_DELIMITERS
    plain = copy.deepcopy(streamed)
    plain["name"] = "streaming-off"
    for node in plain["nodes"]:
        node.pop("stream", None)
        node.pop("segment_delimiters", None)
    # without stream, sentiment reads the whole text once: it has no segments output
    plain["outputs"] = {"text": "generate.text", "sentiment": "sentiment"}
    return streamed, plain


def stream(run: Run, procs: StackProcs) -> None:
    streamed, plain = streaming_graphs()
    common: dict[str, Any] = {
        "kind": "stream",
        "address": procs.composer,
        "inputs": {"prompt": PROMPT},
        "node": "sentiment",
        "server_pids": list(procs.pids.values()),
    }
    specs = {
        "streamed": level_spec(STREAM_LEVEL, graph_inline=streamed, until="chunk", **common),
        "not_streamed": level_spec(STREAM_LEVEL, graph_inline=plain, until="finished", **common),
    }
    results = alternate({name: run.measurer(spec) for name, spec in specs.items()}, run.rounds)
    run.emit(stream_record(results["streamed"], results["not_streamed"], streamed))
    # context: the example as written (default delimiters), which yields a single segment
    as_is = level_spec(STREAM_LEVEL, graph="streaming", until="chunk", **common)
    deployed = summary([run.measure(as_is)])
    run.emit(stream_as_is_record(deployed, results["not_streamed"]))
    if run.profile:
        from bench.composer_profile import profile_stack

        run.emit(profile_stack(procs, as_is, run.workdir, "streaming-as-deployed", seconds=6))
        run.emit(profile_stack(procs, specs["not_streamed"], run.workdir, "streaming-off",
                               seconds=6))  # fmt: skip


def stream_record(
    streamed: dict[str, Any], plain: dict[str, Any], graph_file: dict[str, Any]
) -> dict[str, Any]:
    first = ratio(streamed["p50_ms"], plain["p50_ms"])
    checks = {
        "no errors": clean(streamed) and clean(plain),
        "several segments streamed": streamed["sample"].get("sentiment_chunks", 0) > 1,
        f"first downstream result p50 <= {STREAM_GOAL}x": (first or math.inf) <= STREAM_GOAL,
    }
    return {
        "bench": "composer_stream",
        "scenario": "streaming graph, c=1: gpt2 (48 new tokens) streaming into sentiment",
        "variant": (
            f"inline variant of examples/graphs/streaming.yaml with segment_delimiters "
            f"{STREAM_DELIMITERS!r} (word segments): the tiny random GPT-2 rarely emits sentence "
            "punctuation, so the default '.!?\\n' gives one segment"
        ),
        "streamed": {
            "name": "RunStream: request -> first NodeChunk of 'sentiment'",
            **without_sample(streamed),
            "segments": streamed["sample"].get("sentiment_chunks"),
        },
        "baseline": {
            "name": "same graph, stream unset: request -> NodeFinished of 'sentiment'",
            **without_sample(plain),
        },
        "first_result_ratio_p50": first,
        "first_result_ratio_p99": ratio(streamed["p99_ms"], plain["p99_ms"]),
        "graph": graph_file,
        "goal": f"time to first downstream result <= {STREAM_GOAL}x the non-streamed graph's",
        "checks": checks,
        "pass": all(checks.values()),
    }


def stream_as_is_record(deployed: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    return {
        "bench": "composer_stream",
        "scenario": "streaming graph as deployed (default delimiters '.!?\\n'), c=1",
        "streamed": {
            "name": "RunStream of examples/graphs/streaming.yaml: first NodeChunk of 'sentiment'",
            **without_sample(deployed),
            "segments": deployed["sample"].get("sentiment_chunks"),
        },
        "baseline": {"name": "stream unset (as in the line above)", **without_sample(plain)},
        "first_result_ratio_p50": ratio(deployed["p50_ms"], plain["p50_ms"]),
        "goal": "informational: with one segment, streaming cannot answer earlier",
        "checks": {"no errors": clean(deployed)},
        "pass": clean(deployed),
    }


# -- main -----------------------------------------------------------------------------------


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the goal levels")
    parser.add_argument("--profile", action="store_true", help="py-spy the stack (+45 s)")
    parser.add_argument(
        "--whatif", action="store_true", help="the graph with the generators split (+45 s)"
    )
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := only - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}: use {SCENARIOS}")
    started = time.monotonic()
    if args.profile:  # this run's folded stacks only
        (RESULTS.parent / "composer-profile.json").unlink(missing_ok=True)
    machine = machine_info()
    machine["bentoml"] = BENTOML_VERSION
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        run = Run(Path(tmp), max(1, args.rounds), args.profile, only, args.whatif)
        run.emit(machine)
        if "hop" in only:
            hop(run)
        if only & {"graph", "stream"}:
            models = prepare_models()
            if "graph" in only:
                graph(run, models)
            else:
                with modelyard_stack(
                    REPO / "examples" / "stack.yaml", run.workdir / "stack", "stack"
                ) as procs:
                    stream(run, procs)
    verdicts = [r["pass"] for r in run.records if "pass" in r]
    summary_line = {
        "bench": "summary",
        "all_pass": all(verdicts),
        "failed": [r["scenario"] for r in run.records if r.get("pass") is False],
        "seconds": round(time.monotonic() - started, 1),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    run.emit(summary_line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(run.records, indent=2) + "\n")


if __name__ == "__main__":
    main()
