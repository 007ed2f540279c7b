"""The README's main job, run as a user runs it: `modelyard demo` (what `make demo` calls)."""

from __future__ import annotations

import re
import subprocess
import sys

from modelyard_cli.demo import REPO
from tools.demo_models import prepare_models


def test_the_demo_serves_several_models_in_one_worker_and_stops_cleanly() -> None:
    prepare_models()  # what `make demo-worker` runs first (`make models`)
    done = subprocess.run(
        [sys.executable, "-m", "modelyard_cli", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("embed", "sentiment", "zero-shot", "generate", "ner", "fill-mask", "echo"):
        assert re.search(rf"│ {re.escape(name)}\s+│ \S+\s+│ ready", out), f"{name} not ready"
    assert "384-dim unit vectors" in out  # real MiniLM embeddings
    row = r"#0 A man is playing a guitar\.\s+│\s*1\.000\s*│\s*(\S+)\s*│\s*(\S+)\s*│"
    similar = re.search(row, out)
    assert similar is not None
    assert float(similar.group(1)) > float(similar.group(2)) + 0.2  # meaning, not noise
    chunks = re.search(r"\((\d+) chunks; final text", out)
    assert chunks is not None and int(chunks.group(1)) >= 2  # a streamed generation
    assert "worker stopped on SIGTERM with exit code 0" in out
