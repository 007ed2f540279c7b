"""composer_graph_whatif (`--whatif`): the seed graph with its two generators placed the
other way, on a second stack alternating with the stack as is (both up at once; the idle
one costs ~3% of a core).

Models in one worker share its GIL, and the tiny generators' loops are Python-bound, so
where they live matters: if examples/stack.yaml puts gpt2 and distilgpt2 on one worker the
variant gives distilgpt2 a worker of its own; if they have a worker each (as it does
since finding 1), the variant puts both on gpt2's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.common.paths import REPO
from bench.common.stats import alternate, clean, ratio
from bench.composer.graph import LEVELS, modelyard_spec
from bench.composer.run import Run, without_sample
from bench.composer.stacks import StackProcs, modelyard_stack

EXAMPLES = REPO / "examples"


def flipped_stack(folder: Path) -> tuple[Path, str]:
    """examples/stack.yaml with distilgpt2 moved (see the module doc); the file and what
    the move was."""
    spec = yaml.safe_load((EXAMPLES / "stack.yaml").read_text())
    for worker in spec["workers"]:
        for model in worker.get("models", []):
            if str(model.get("source", "")).startswith(("./", "../")):
                model["source"] = str((EXAMPLES / model["source"]).resolve())
    home = {m["name"]: w for w in spec["workers"] for m in w.get("models", [])}
    gpt2, distil = home["gpt2"], home["distilgpt2"]
    moved = [m for m in distil["models"] if m["name"] == "distilgpt2"]
    distil["models"] = [m for m in distil["models"] if m["name"] != "distilgpt2"]
    if gpt2 is distil:
        tags = gpt2.get("tags", {})
        spec["workers"].append({"worker_id": "distilgpt2-alone", "tags": tags, "models": moved})
        change = "distilgpt2 on a worker of its own"
    else:
        gpt2["models"].extend(moved)
        spec["workers"] = [w for w in spec["workers"] if w.get("models")]
        change = "gpt2 and distilgpt2 on one worker"
    spec["graphs"] = [str(EXAMPLES / "graphs" / "inference-graph.yaml")]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stack-whatif.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, change


def whatif(run: Run, as_is: StackProcs) -> None:
    stack_file, change = flipped_stack(run.workdir / "whatif")
    with modelyard_stack(stack_file, run.workdir / "whatif" / "state") as variant:
        for level in map(run.level, LEVELS):
            results = alternate(
                {
                    "what_if": run.measurer(modelyard_spec(level, variant)),
                    "as_is": run.measurer(modelyard_spec(level, as_is)),
                },
                run.rounds,
            )
            ok = clean(results["what_if"]) and clean(results["as_is"])
            run.recorder.emit(record(level.concurrency, change, results, ok))


def record(
    concurrency: int, change: str, results: dict[str, dict[str, Any]], ok: bool
) -> dict[str, Any]:
    variant, as_is = results["what_if"], results["as_is"]
    return {
        "bench": "composer_graph_whatif",
        "scenario": f"seed inference graph, c={concurrency}: {change}",
        "concurrency": concurrency,
        "what_if": {"name": f"examples/stack.yaml with {change}", **without_sample(variant)},
        "baseline": {"name": "examples/stack.yaml as is", **without_sample(as_is)},
        "throughput_ratio": ratio(variant["throughput_rps"], as_is["throughput_rps"]),
        "p50_ratio": ratio(variant["p50_ms"], as_is["p50_ms"]),
        "goal": "informational (pass = no errors)",
        "checks": {"no errors": ok},
        "pass": ok,
    }
