"""memory_worker, memory_stack: what a worker and the whole local stack hold (issue 12).

memory_worker, two lines: a worker serving only Echo, and a worker serving one tiny
transformers model (tiny-bert-sentiment, text-classification). Each is measured when it
serves and after a short load: RSS, PSS and USS of its process (/proc/<pid>/smaps). Both
also serve `ImportedModules` (plain Python, imports nothing), which says whether torch,
transformers or cryptography are in the process. Baseline, in the same run: the same
worker through `bench.experiments.patched_worker --variants eager`, which imports what
every worker imported before these imports became lazy. Beside the tiny model, the floor:
a bare process that imports torch and transformers, loads the same checkpoint in a
pipeline and calls it as often, with nothing of modelyard (`bench.worker.memory_floor`),
and what the floor is made of: `import torch` alone, and with torch._dynamo (which
transformers 5 imports for any model). Goal: a worker serving one tiny model holds
<= 350 MB RSS.

memory_stack: `modelyard up examples/stack.yaml` as a user starts it (supervisor,
etcd, control plane, three workers, composer, gateway): every process when the stack is
ready and after the seed graph at c=4, the summed RSS sampled during it. Goal: the stack's
RSS summed over its processes <= 1.4 GB, BentoML's for the same graph as issue 12 records
it (not measured in this run; bench.composer's composer_rss runs BentoML beside the stack).
PSS summed is reported beside it: it counts the pages the workers share (libtorch's code,
the same wheels) once, not once per process.

--smoke: Echo stands in for the checkpoint, no baseline and no floor; the stack is one
worker of stand-ins (bench.composer.smoke's tracing stack).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.common.children import run_json_child
from bench.common.errors import BenchError
from bench.common.load.driver import Level, run_load
from bench.common.memory import MB, RssSampler, memory_mb
from bench.common.paths import REPO
from bench.common.servers import Command, Program, serving, worker, write_worker_config
from bench.common.stats import clean
from bench.composer.run import PROMPT
from bench.composer.smoke import write_tracing_stack
from bench.composer.stacks import FAIR_ENV, STACK_START_TIMEOUT_S
from bench.worker.models import (
    ECHO_INPUTS,
    ECHO_MODEL,
    SENTIMENT_INPUTS,
    Checkpoints,
    checkpoint_model,
)
from bench.worker.run import Run, load_spec
from modelyard.client import Client
from modelyard_cli.state import StackState, running_stack

STOP_TIMEOUT_S = 120.0  # the supervisor stops every service in order
GOAL_WORKER_MB = 350.0
GOAL_STACK_MB = 1400.0
# Issue 12's figures, measured before this bench existed (bench.composer composer_rss).
RECORDED = {
    "stack_rss_mb": 2000,
    "stack_processes": 7,
    "worker_rss_mb": 470,
    "bentoml_rss_mb": 1400,
    "bentoml_processes": 5,
}
WORKER_LEVEL = Level(4, 200, 20, time_cap_s=15.0)
STACK_LEVEL = Level(4, 60, 8, time_cap_s=60.0)
GRAPH = "inference-graph"
PROBE = {"name": "imported", "class": "tests.support.models:ImportedModules"}
WATCHED = ["torch", "transformers", "cryptography"]
EAGER = "bench.experiments.patched_worker"
NO_BASELINE = "smoke run: no eager-import baseline"

CommandFor = Callable[[Path], Command]


def eager_worker(config: Path) -> Command:
    return Program(EAGER, ("--variants", "eager", "worker", "--config", str(config)))


def measure_worker(
    run: Run, name: str, command: CommandFor, model: dict[str, Any], inputs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Starts a worker serving `model` (and the import probe); its memory at ready and
    after a short load on `model`."""
    config = write_worker_config(run.workdir / f"{name}.yaml", [model, PROBE])
    with serving(name, command(config), run.workdir) as served:
        ready = memory_mb(served.pid)
        load = run_load(load_spec(served, model["name"], inputs, run.level(WORKER_LEVEL)))
        after = memory_mb(served.pid)
        with Client(served.address, timeout=30) as client:
            imported = client.predict(PROBE["name"], names=WATCHED).outputs["imported"]
    return {
        "at_ready": ready,
        "after_load": after,
        "imported": list(imported),
        "load": {k: load[k] for k in ("ok", "errors", "capped", "p50_ms", "throughput_rps")},
        "errors": load["errors"],
        "capped": load["capped"],
    }


# What the floor is made of, each statement in a bare process. transformers 5 imports
# torch._dynamo for every model (masking_utils imports one of its modules; decorators in its
# integrations call it at import), and dynamo brings sympy, torch.distributed.tensor and
# torch.onnx: no setting of either library turns that off.
FLOOR_PARTS = ("import torch", "import torch, torch._dynamo")
PRINT_MEMORY = (
    "import json, os; from bench.common.memory import memory_mb; "
    "print(json.dumps(memory_mb(os.getpid())))"
)


def floor(checkpoint: Path, calls: int) -> dict[str, Any]:
    return {
        **run_json_child(["-m", "bench.worker.memory_floor", str(checkpoint), str(calls)]),
        "parts_rss_mb": {
            statement: run_json_child(["-c", f"{statement}; {PRINT_MEMORY}"])["rss_mb"]
            for statement in FLOOR_PARTS
        },
    }


def worker_record(
    run: Run, what: str, model: dict[str, Any], inputs: list[dict[str, Any]], goal: bool
) -> dict[str, Any]:
    name = f"memory-{model['name']}"
    measured = measure_worker(run, name, worker, model, inputs)
    baseline: dict[str, Any] = {"skipped": NO_BASELINE}
    if not run.smoke:
        baseline = measure_worker(run, f"{name}-eager", eager_worker, model, inputs)
    rss = measured["after_load"]["rss_mb"]
    checks = {"every request answered": clean(measured)}
    record: dict[str, Any] = {
        "bench": "memory_worker",
        "scenario": what,
        "worker": measured,
        "baseline": {
            "name": "the same worker importing what workers imported before issue 12 "
            "(bench.experiments.patched_worker --variants eager)",
            **baseline,
        },
    }
    if "after_load" in baseline:
        record["saved_rss_mb"] = round(baseline["after_load"]["rss_mb"] - rss, 1)
    if goal:
        checks[f"RSS after load <= {GOAL_WORKER_MB:g} MB"] = rss <= GOAL_WORKER_MB
        record["goal"] = f"a worker serving one tiny model holds <= {GOAL_WORKER_MB:g} MB RSS"
        record["recorded_in_issue_mb"] = RECORDED["worker_rss_mb"]
    else:
        heavy = {"torch", "transformers"} & set(measured["imported"])
        checks["imports neither torch nor transformers"] = not heavy
        record["goal"] = "none set: a worker without transformers models pays nothing for them"
    return {**record, "checks": checks, "pass": all(checks.values())}


def stack_file(run: Run) -> Path:
    if run.smoke:
        return write_tracing_stack(run.workdir / "smoke-stack")
    # its checkpoints: what `make models` builds (cached by content), in a child, as this
    # process never imports torch
    subprocess.run([sys.executable, "-m", "tools.demo_models"],
                   cwd=REPO, capture_output=True, timeout=300, check=True)  # fmt: skip
    return REPO / "examples" / "stack.yaml"


def label(process: psutil.Process) -> str:
    """etcd, supervisor, controlplane, composer, gateway or `worker <id>`."""
    argv = process.cmdline()
    if argv and Path(argv[0]).name == "etcd":
        return "etcd"
    if "up" in argv:
        return "supervisor"
    if "worker" in argv and "--config" in argv:
        return f"worker {Path(argv[argv.index('--config') + 1]).stem}"
    return next((a for a in argv if a in ("controlplane", "composer", "gateway")), argv[0])


@contextmanager
def up(path: Path, work_dir: Path) -> Iterator[tuple[dict[str, int], str]]:
    """`modelyard up` as a child of this process, until its state file says ready; then
    SIGTERM, its Ctrl-C path. Yields its processes (label -> pid) and the composer."""
    env = {**os.environ, **FAIR_ENV, "PYTHONPATH": str(REPO)}
    work_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "modelyard_cli", "up", str(path), "--fresh",
               "--work-dir", str(work_dir)]  # fmt: skip
    with (work_dir / "up.log").open("wb") as log:  # the child keeps its own descriptor
        supervisor = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        state = wait_ready(supervisor, work_dir)
        root = psutil.Process(supervisor.pid)
        processes = [root, *root.children(recursive=True)]
        yield {label(p): p.pid for p in processes}, state.composer
    finally:
        supervisor.terminate()
        try:
            supervisor.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for process in psutil.Process(supervisor.pid).children(recursive=True):
                process.kill()
            supervisor.kill()
            supervisor.wait(STOP_TIMEOUT_S)


def wait_ready(supervisor: subprocess.Popen[bytes], work_dir: Path) -> StackState:
    deadline = time.monotonic() + 3 * STACK_START_TIMEOUT_S  # three workers, one at a time
    while (state := running_stack(work_dir)) is None or not state.ready:
        if supervisor.poll() is not None:
            raise BenchError(f"modelyard up exited with {supervisor.returncode}; see {work_dir}")
        if time.monotonic() > deadline:
            raise BenchError(f"modelyard up not ready in time; see {work_dir}")
        time.sleep(0.2)
    return state


def summed(memory: dict[str, dict[str, float]], kind: str, skip: str = "") -> float:
    return round(sum(m[f"{kind}_mb"] for name, m in memory.items() if name != skip), 1)


def stack_record(run: Run) -> dict[str, Any]:
    path = stack_file(run)
    with up(path, run.workdir / "stack") as (pids, composer):
        ready = {name: memory_mb(pid) for name, pid in pids.items()}
        spec = run.level(STACK_LEVEL).spec(
            kind="run", address=composer, graph=GRAPH, inputs=[{"prompt": PROMPT}]
        )
        with RssSampler(pids, interval_s=0.2) as sampler:
            load = run_load(spec)
        after = {name: memory_mb(pid) for name, pid in pids.items()}
    totals = {
        kind: {"at_ready": summed(ready, kind), "after_load": summed(after, kind)}
        for kind in ("rss", "pss", "uss")
    }
    rss = totals["rss"]["after_load"]
    checks = {
        "every graph run answered": clean(load),
        f"RSS summed after load <= {GOAL_STACK_MB:g} MB": rss <= GOAL_STACK_MB,
    }
    return {
        "bench": "memory_stack",
        "scenario": f"modelyard up {path.name}, then {GRAPH} at c={spec['concurrency']}",
        "processes": len(pids),
        "at_ready_mb": ready,
        "after_load_mb": after,
        "total_mb": totals,
        "rss_peak_total_mb": round(sampler.peak_total / MB, 1),
        "without_gateway_rss_mb": summed(after, "rss", skip="gateway"),
        "pss_within_goal": totals["pss"]["after_load"] <= GOAL_STACK_MB,
        "load": {k: load[k] for k in ("ok", "errors", "capped", "p50_ms", "throughput_rps")},
        "baseline": {
            "name": "issue 12's recorded figures (not measured in this run)",
            **RECORDED,
        },
        "goal": f"the whole stack <= {GOAL_STACK_MB:g} MB RSS summed over its processes "
        "(BentoML's, recorded); PSS summed beside it counts shared pages once",
        "checks": checks,
        "pass": all(checks.values()),
    }


def memory(run: Run, checkpoints: Checkpoints) -> None:
    run.recorder.emit(worker_record(run, "one worker serving only Echo", ECHO_MODEL[0],
                                    ECHO_INPUTS, goal=False))  # fmt: skip
    tiny = checkpoint_model("sentiment", checkpoints, "tiny-bert-sentiment", "text-classification")
    what = "one worker serving one tiny transformers model (tiny-bert-sentiment)"
    if checkpoints is None:
        what += "; smoke run: Echo stands in"
    record = worker_record(run, what, tiny, SENTIMENT_INPUTS, goal=True)
    if checkpoints is not None:
        record["floor"] = {
            "name": "torch + transformers + the checkpoint in a pipeline, no modelyard",
            **floor(checkpoints["tiny-bert-sentiment"], WORKER_LEVEL.requests),
        }
    run.recorder.emit(record)
    run.recorder.emit(stack_record(run))
