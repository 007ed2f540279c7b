"""The graph commands against real processes (etcd, a control plane, a worker, a composer):
`graph show --format yaml` deploys back unchanged at any terminal width, `run --output
json` prints the result and nothing else, and deploy-time validation checks a graph
against the signatures of the models workers serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from composer.spec import load_graph
from modelyard.composer_client import ComposerClient
from modelyard_cli.demo import REPO
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import import_path_env, start_service, stop_service

MODELYARD = str(Path(sys.executable).parent / "modelyard")
EXAMPLES = sorted((REPO / "examples" / "graphs").glob("*.yaml"))
MODELS = [
    {"name": "picky", "class": "tests.support.models:Picky"},  # text (string) -> text
    {"name": "ticker", "class": "tests.support.models:Ticker"},  # count (int) -> ticks
]


@pytest.fixture(scope="module")
def composer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a composer whose cluster serves MODELS."""
    config = tmp_path_factory.mktemp("graphs") / "worker.yaml"
    processes: list[subprocess.Popen[bytes]] = []
    with EtcdServer() as etcd:
        etcd_flag = ["--etcd", etcd.endpoint]
        config.write_text(
            yaml.safe_dump({"models": MODELS, "etcd": {"endpoints": [etcd.endpoint]}})
        )
        try:
            plane, plane_address = start_service(["controlplane", *etcd_flag], timeout=60)
            processes.append(plane)
            worker, _ = start_service(
                ["worker", "--config", str(config)], timeout=60, env=import_path_env(REPO)
            )
            processes.append(worker)
            service, address = start_service(
                ["composer", *etcd_flag, "--controlplane", plane_address], timeout=60
            )
            processes.append(service)
            yield address
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    stop_service(process)


def modelyard(composer: str, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "MODELYARD_COMPOSER_ADDRESS": composer}
    done = subprocess.run([MODELYARD, *args], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
@pytest.mark.parametrize("columns", [40, 250])
def test_show_as_yaml_deploys_back_unchanged(
    composer: str, tmp_path: Path, path: Path, columns: int
) -> None:
    original = load_graph(path)
    assert modelyard(composer, "graph", "deploy", str(path)).returncode == 0
    shown = modelyard(composer, "graph", "show", original.name, "--format", "yaml", columns=columns)
    assert shown.returncode == 0, shown.stderr
    copy = tmp_path / f"{original.name}.yaml"
    copy.write_text(shown.stdout)
    assert load_graph(copy) == original  # what was shown is the graph, whole
    with ComposerClient(composer, timeout=30) as client:
        client.delete(original.name)
    deployed = modelyard(composer, "graph", "deploy", str(copy))
    assert deployed.returncode == 0, deployed.stderr
    with ComposerClient(composer, timeout=30) as client:
        assert client.get(original.name) == original


def write_graph(folder: Path, **nodes: dict[str, object]) -> Path:
    inputs = {"text": "string", "n": "int"}
    graph = {
        "name": "shout",
        "inputs": inputs,
        "nodes": [{"name": k, **v} for k, v in nodes.items()],
    }
    graph["outputs"] = {"text": "loud.text"}
    path = folder / "shout.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path


def test_run_output_json_prints_only_the_result(composer: str, tmp_path: Path) -> None:
    graph = write_graph(tmp_path, loud={"model": "picky", "inputs": {"text": "inputs.text"}})
    assert modelyard(composer, "graph", "deploy", str(graph)).returncode == 0
    done = modelyard(composer, "run", "shout", "-i", "text=hello", "-i", "n=1", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "HELLO"}


def test_run_output_json_prints_an_error_on_stderr_only(composer: str) -> None:
    done = modelyard(composer, "run", "nobody-deployed-this", "--output", "json")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: NOT_FOUND: ")


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"model": "picky", "inputs": {"text": "inputs.n"}},
            "node 'loud': input 'text' is graph input 'n' (an integer), but model 'picky' "
            "takes a string",
        ),
        (
            {"model": "ticker", "inputs": {"count": "inputs.n"}},
            "output 'text' references 'loud.text', but node 'loud' (model 'ticker') has no "
            "output 'text' (its outputs: ticks)",
        ),
    ],
    ids=["input-kind", "output-field"],
)
def test_deploy_refuses_what_the_model_cannot_do(
    composer: str, tmp_path: Path, node: dict[str, object], message: str
) -> None:
    for command in ("validate", "deploy"):
        done = modelyard(composer, "graph", command, str(write_graph(tmp_path, loud=node)))
        assert done.returncode == 1
        assert message in " ".join((done.stdout + done.stderr).split())


def test_an_unserved_model_warns_with_a_did_you_mean(composer: str, tmp_path: Path) -> None:
    graph = write_graph(tmp_path, loud={"model": "picy", "inputs": {"text": "inputs.text"}})
    done = modelyard(composer, "graph", "validate", str(graph), columns=250)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no worker serves model 'picy' yet (did you mean 'picky'?)" in done.stdout
