"""The README's main job: a real worker process serving several models, called over gRPC.

`run_demo` expects the demo checkpoints (`make models`, see tools/demo_models.py), starts
`modelyard worker --config examples/worker.yaml` on a free port, calls each model with the
Python client (a streamed generation among them), prints what comes back, and stops the
worker with SIGTERM as an operator would.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from modelyard.client import Client
from modelyard.v1 import predict_pb2 as pb
from modelyard_cli.processes import import_path_env, start_service, stop_service

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "examples" / "worker.yaml"


def start_worker(config: Path, *, timeout: float = 180.0) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `modelyard worker` on a free port; returns it once every model has loaded."""
    return start_service(
        ["worker", "--config", str(config)], timeout=timeout, env=import_path_env(config.parent)
    )


def run_demo(console: Console, config: Path = EXAMPLE_CONFIG) -> int:
    console.rule("[bold]modelyard demo: one worker, several models, over gRPC")
    started = time.monotonic()
    process, address = start_worker(config)
    console.print(f"worker serving on {address} ({time.monotonic() - started:.1f} s after start)")
    try:
        with Client(address, timeout=60) as client:
            _show_models(console, client)
            _show_embeddings(console, client)
            _show_classifiers(console, client)
            _show_generation(console, client)
            _show_tokens(console, client)
    finally:
        code = stop_service(process)
    console.print(f"worker stopped on SIGTERM with exit code {code}")
    return 0 if code == 0 else 1


def _show_models(console: Console, client: Client) -> None:
    table = Table(title="ListModels")
    for column in ("model", "task", "state", "version"):
        table.add_column(column)
    for model in client.list_models():
        state = pb.ModelState.Name(model.state).removeprefix("MODEL_STATE_").lower()
        table.add_row(model.model, model.task, state, model.version)
    console.print(table)


def _show_embeddings(console: Console, client: Client) -> None:
    sentences = [
        "A man is playing a guitar.",
        "Someone is playing an instrument.",
        "The stock market fell sharply today.",
    ]
    vectors = np.stack([client.predict("embed", text=s).outputs["embedding"] for s in sentences])
    console.print(
        f"\n[bold]embed[/bold] (real all-MiniLM-L6-v2): {vectors.shape[1]}-dim unit vectors, "
        "cosine similarity:"
    )
    table = Table()
    table.add_column("")
    for i in range(len(sentences)):
        table.add_column(f"#{i}")
    for i, sentence in enumerate(sentences):
        table.add_row(f"#{i} {sentence}", *(f"{vectors[i] @ vectors[j]:.3f}" for j in range(3)))
    console.print(table)


def _show_classifiers(console: Console, client: Client) -> None:
    text = "I have an idea for a new kind of model server!"
    sentiment = client.predict("sentiment", text=text).outputs
    labels = ["technology", "cooking", "sports"]
    zero_shot = client.predict("zero-shot", text=text, candidate_labels=labels).outputs
    console.print(
        f"\n[bold]sentiment[/bold] {text!r} -> {sentiment['label']} ({sentiment['score']:.3f})"
    )
    ranked = ", ".join(
        f"{label} {score:.3f}"
        for label, score in zip(zero_shot["labels"], zero_shot["scores"], strict=True)
    )
    console.print(f"[bold]zero-shot[/bold] {labels} -> {ranked}")
    console.print("[dim](tiny random checkpoints: real model outputs, untrained weights)[/dim]")


def _show_generation(console: Console, client: Client) -> None:
    prompt = "I have an idea"
    console.print(f"\n[bold]generate[/bold] streamed token by token from {prompt!r}:")
    chunks = 0
    for event in client.predict_stream("generate", text=prompt):
        if event.final:
            console.print(
                f"\n  ({chunks} chunks; final text of {len(event.outputs['text'])} chars)"
            )
        else:
            chunks += 1
            console.print(event.outputs["text"], end="", markup=False, highlight=False)


def _show_tokens(console: Console, client: Client) -> None:
    entities = client.predict("ner", text="Ada Lovelace lived in London.").outputs["entities"]
    console.print(
        f"\n[bold]ner[/bold] {len(entities)} entities: "
        + ", ".join(f"{e['word']}:{e['entity']}" for e in entities[:5])
    )
    filled = client.predict("fill-mask", text="The model [MASK] fast.").outputs
    console.print(f"[bold]fill-mask[/bold] top tokens: {filled['tokens'][:3]}")


def main() -> None:
    raise SystemExit(run_demo(Console()))


if __name__ == "__main__":
    main()
