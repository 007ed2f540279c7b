"""Port files: how a service started on port 0 tells its starter where it listens."""

from __future__ import annotations

import os
from pathlib import Path


def write_port_file(path: Path | None, port: int) -> None:
    """Writes `port` to `path` atomically (readers never see half a number); None: no-op."""
    if path is None:
        return
    tmp = Path(f"{path}.tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)
