"""`pip install modelyard` without extras is the client core: built as a wheel, installed
into a fresh venv, it calls a real worker and a real composer, and none of the server
stack (torch, transformers, the CLI, etcd and settings libraries) comes with it.

Run with -s to see the installed size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import import_path_env, start_service, stop_service

REPO = Path(__file__).resolve().parents[2]
LIGHT_CLIENT = Path(__file__).with_name("light_client.py")
# The test's setup builds the wheel, installs it into a fresh venv and starts the servers,
# all under its timeout: on two busy cores that alone took 120-240 s (the default is 120).
pytestmark = pytest.mark.timeout(600)
MODELS = [
    {"name": "echo", "class": "tests.support.models:Echo"},
    {"name": "ticker", "class": "tests.support.models:Ticker"},
]


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(work: Path) -> Path:
    """The project's wheel, built from a copy: an in-place build writes build/ and an
    egg-info into the work tree."""
    source = work / "source"
    source.mkdir()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for path in REPO.iterdir():
        if (path / "__init__.py").exists() and any(fnmatch(path.name, p) for p in patterns):
            shutil.copytree(path, source / path.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # with build isolation, as pip builds for a user: the build-system's setuptools
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source)
    (wheel,) = (work / "dist").glob("modelyard-*.whl")
    return wheel


def kilobytes(path: Path) -> int:
    return int(run("du", "-sk", path).split()[0])


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and what it depends on, nothing more: no pip either
    (this venv's pip installs into it), so its size is the install's."""
    work = tmp_path_factory.mktemp("light-install")
    wheel = build_wheel(work)
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site_packages = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    empty = kilobytes(site_packages)
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)
    installed = kilobytes(site_packages) - empty
    largest = sorted(site_packages.iterdir(), key=kilobytes, reverse=True)[:5]
    print(
        f"\nlight install: site-packages {installed / 1024:.1f} MB added "
        f"({', '.join(f'{p.name} {kilobytes(p) / 1024:.1f}' for p in largest)} MB); "
        f"whole venv {kilobytes(venv) / 1024:.1f} MB"
    )
    assert installed < 200 * 1024  # light: torch alone would be several times this
    return python


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A worker and a composer (with etcd and a control plane) started from this venv;
    returns their addresses."""
    config = tmp_path_factory.mktemp("light-servers") / "worker.yaml"
    processes: list[subprocess.Popen[bytes]] = []
    with EtcdServer() as etcd:
        try:
            config.write_text(
                yaml.safe_dump({"models": MODELS, "etcd": {"endpoints": [etcd.endpoint]}})
            )
            etcd_flag = ("--etcd", etcd.endpoint)
            plane, plane_address = start_service(["controlplane", *etcd_flag], timeout=60)
            processes.append(plane)
            worker, worker_address = start_service(
                ["worker", "--config", str(config)], timeout=60, env=import_path_env(REPO)
            )
            processes.append(worker)
            composer, composer_address = start_service(
                ["composer", *etcd_flag, "--controlplane", plane_address], timeout=60
            )
            processes.append(composer)
            yield worker_address, composer_address
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    stop_service(process)


def test_the_base_install_runs_both_clients_without_the_server_stack(
    light_venv: Path, servers: tuple[str, str]
) -> None:
    worker, composer = servers
    # -I: no PYTHONPATH, no user site, not the script's folder: only the venv's packages
    report = json.loads(
        run(light_venv, "-I", LIGHT_CLIENT, worker, composer, cwd=light_venv.parent)
    )
    assert Path(report["modelyard"]).is_relative_to(light_venv.parents[1])  # not the repo's
    assert report["importable"] == []
    assert report["predict"] == {"text": "hi"}
    assert report["predict_stream"] == [
        [False, {"tick": 0}], [False, {"tick": 1}], [False, {"tick": 2}], [True, {"ticks": 3}]
    ]  # fmt: skip
    assert report["unknown_model"] == ["MODEL_NOT_FOUND", ["model", "nope"]]
    assert report["deploy"] == []  # echo and ticker are served: nothing to warn about
    outputs = {"ticks": 3, "each": [{"tick": i} for i in range(3)]}
    assert report["run"] == outputs
    events = report["run_stream"]
    assert events[-1] == ["result", outputs]
    assert [e for e in events if e[1] == "gen"] == [
        ["started", "gen"],
        *[["chunk", "gen", {"tick": i}] for i in range(3)],
        ["finished", "gen", "ok"],
    ]
    assert [e for e in events if e[1] == "each"][-1] == ["finished", "each", "ok"]
