"""The floor of a transformers worker's memory: torch, transformers and one text
classification checkpoint in a pipeline, called as the memory bench calls the worker, and
nothing of modelyard.

    python -m bench.worker.memory_floor CHECKPOINT CALLS

Prints one JSON line: its RSS, PSS and USS in MB once the calls are done. Whatever a worker
serving that checkpoint holds beyond this is modelyard's.
"""

from __future__ import annotations

import json
import os
import sys

from bench.common.memory import memory_mb

TEXTS = ("I loved this movie, it was wonderful and moving.", "The service was slow.")


def main() -> None:
    checkpoint, calls = sys.argv[1], int(sys.argv[2])
    import torch
    from transformers import pipeline

    torch.set_num_threads(1)  # as a worker runs a model (`threads: 1`)
    model = pipeline("text-classification", model=checkpoint, device="cpu")
    for i in range(calls):
        model(TEXTS[i % len(TEXTS)])
    print(json.dumps(memory_mb(os.getpid())))


if __name__ == "__main__":
    main()
