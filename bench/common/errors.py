"""A failed bench process: the error says which, and carries the end of its log."""

from __future__ import annotations

from pathlib import Path


class BenchError(RuntimeError):
    """A process of the bench failed; the message carries the end of its log."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
