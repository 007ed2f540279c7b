"""Each layer imports only what its extra declares (the per-layer half of `deptry`, which
checks the project as a whole): `pip install modelyard` must run the client core, and
`modelyard[worker]` a worker, with nothing else installed."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"modelyard", "modelyard_server", "modelyard_cli", "workers", "controlplane",
               "composer", "gateway", "tools", "tests", "bench"}  # fmt: skip
# package -> the extras a user installs to run it ("" is the base install)
LAYERS = {
    "modelyard": [""],
    "modelyard_server": ["server"],
    "controlplane": ["controlplane"],
    "composer": ["composer"],
    "gateway": ["gateway"],
    "workers": ["worker"],
    "modelyard_cli": ["cli"],
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: list[str]) -> set[str]:
    """The distributions that `pip install modelyard[extras]` brings, one level deep."""
    wanted, seen, found = [*extras, ""], set(), set()
    requirements = metadata.requires("modelyard") or []
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in requirements:
            marker = re.search(r'extra\s*==\s*"([^"]+)"', requirement)
            if (marker.group(1) if marker else "") != extra:
                continue
            name = re.match(r"[A-Za-z0-9._-]+", requirement)
            assert name is not None
            if _normal(name.group(0)) == "modelyard":
                inner = re.search(r"\[([^\]]+)\]", requirement)
                wanted.extend(e.strip() for e in (inner.group(1) if inner else "").split(","))
            else:
                found.add(_normal(name.group(0)))
    return found


def _imports(package: str) -> dict[str, str]:
    """Third-party top-level modules imported anywhere in `package` (lazy imports too)."""
    found: dict[str, str] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                    found.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_a_layer_imports_only_what_its_extra_installs(package: str) -> None:
    declared = _declared(LAYERS[package])
    distributions = metadata.packages_distributions()
    undeclared = {
        module: where
        for module, where in _imports(package).items()
        if not {_normal(d) for d in distributions.get(module, [module])} & declared
    }
    assert not undeclared, f"{package} imports modules its extra does not install: {undeclared}"


def test_the_base_install_is_the_client_core_only() -> None:
    # grpcio-status and googleapis-common-protos: the google.rpc.Status details of errors
    assert _declared([""]) == {
        "grpcio", "grpcio-status", "googleapis-common-protos", "protobuf", "numpy"
    }  # fmt: skip
