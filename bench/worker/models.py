"""What the worker bench serves and sends: model configs, payloads, checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common.paths import REPO

ECHO = "tests.support.models:Echo"
ECHO_MODEL = [{"name": "echo", "class": ECHO}]
# A small payload of two kinds, so decoding and encoding Values is part of the cost.
ECHO_INPUTS = [{"text": "The quick brown fox", "x": 1.5}]
# Several texts of similar length: a batch is not N copies of one string, and padding
# stays comparable between batched and unbatched runs.
SENTIMENT_INPUTS = [
    {"text": "I loved this movie, it was wonderful and moving."},
    {"text": "The service was slow and the waiter was rude."},
    {"text": "The food at the restaurant was delicious."},
    {"text": "This film was terrible and boring, I hated it."},
]
NLI_INPUTS = [
    {"text": t["text"], "candidate_labels": ["sports", "politics", "business"]}
    for t in SENTIMENT_INPUTS
]
GPT2_INPUTS = [{"text": "The weather is"}, {"text": "Once upon a time"}]
# Long enough that a batch's decoding loop is most of a call, short enough for a quick bench.
GENERATION_PARAMETERS = {"max_new_tokens": 16}
BATCH_ON = {"max_batch_size": 32, "max_wait_ms": 2}
BATCH_OFF = {"max_batch_size": 1}

# checkpoint name -> directory; None in a smoke run, where Echo stands in for every
# checkpoint (same names, same batching) so no torch is imported and nothing is built
Checkpoints = dict[str, Path] | None


def build_checkpoints(root: Path) -> dict[str, Path]:
    """The tiny checkpoints, built in a child process so this one never imports torch."""
    subprocess.run(
        [sys.executable, "-m", "tools.tiny_models", str(root)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def checkpoint_model(
    name: str, checkpoints: Checkpoints, checkpoint: str, task: str, **config: Any
) -> dict[str, Any]:
    """A model served from a tiny checkpoint (or its stand-in in a smoke run)."""
    batching = {"batching": config["batching"]} if "batching" in config else {}
    if checkpoints is None:
        return {"name": name, "class": ECHO, **batching}
    return {"name": name, "source": str(checkpoints[checkpoint]), "task": task, **config}


def sentiment_model(
    name: str, checkpoints: Checkpoints, batching: dict[str, Any]
) -> dict[str, Any]:
    return checkpoint_model(
        name, checkpoints, "tiny-bert-sentiment", "text-classification", batching=batching
    )


def generation_model(
    name: str, checkpoints: Checkpoints, batching: dict[str, Any]
) -> dict[str, Any]:
    return checkpoint_model(
        name,
        checkpoints,
        "tiny-gpt2",
        "text-generation",
        batching=batching,
        parameters=GENERATION_PARAMETERS,
    )
