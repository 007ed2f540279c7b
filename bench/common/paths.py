"""Where things are: every child runs from the repository root, so `-m bench...` and
`tests.support.models:Echo` import from this checkout whatever directory a bench started in."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "bench" / "results"  # *.json there is git-ignored
