"""The stacks of a smoke run: the hop scenario's three Echo workers, which also serve
stand-ins (bench/composer/standins.py) for the seed graph's models, and every graph the
scenarios use, so one stack start serves hop, graph and stream; and for the tracing
scenario's three stacks the smallest that runs the seed graph, one worker of stand-ins."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.common.paths import REPO
from bench.composer import hop

GENERATOR = "bench.composer.standins:Generator"
CLASSIFIER = "bench.composer.standins:Classifier"
STAND_INS = {  # hop worker -> the seed graph's models it also serves
    "echo-a": [{"name": "gpt2", "class": GENERATOR}],
    "echo-b": [{"name": "distilgpt2", "class": GENERATOR}],
    "echo-c": [{"name": "bert", "class": CLASSIFIER}, {"name": "sentiment", "class": CLASSIFIER}],
}
GRAPHS = REPO / "examples" / "graphs"


def write_stack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    workers = hop.hop_workers()
    for worker in workers:
        worker["models"] += STAND_INS[worker["worker_id"]]
    graphs = [hop.write_graph(folder), GRAPHS / "inference-graph.yaml", GRAPHS / "streaming.yaml"]
    path = folder / "stack-smoke.yaml"
    stack = {"workers": workers, "graphs": [str(graph) for graph in graphs]}
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def write_tracing_stack(folder: Path) -> Path:
    """One worker serving every stand-in, and the seed inference graph."""
    folder.mkdir(parents=True, exist_ok=True)
    models = [model for stand_ins in STAND_INS.values() for model in stand_ins]
    stack = {
        "workers": [{"worker_id": "stand-ins", "models": models}],
        "graphs": [str(GRAPHS / "inference-graph.yaml")],
    }
    path = folder / "stack-tracing-smoke.yaml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path
