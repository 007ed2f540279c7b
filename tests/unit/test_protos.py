"""The committed stubs are exactly what protos/ generates (run `make protos` if this fails)."""

from __future__ import annotations

from pathlib import Path

from tools import protogen

STUBS = protogen.ROOT / "modelyard" / "v1"


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "modelyard" / "v1").iterdir()}
    committed = {name: (STUBS / name).read_bytes() for name in fresh if (STUBS / name).exists()}
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    assert not stale, f"stale stubs {stale}: run `make protos` and commit the result"
    assert len(fresh) >= 8  # messages, services and their .pyi for every proto file
