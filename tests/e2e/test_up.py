"""The local stack's lifecycle as a user drives it from shells: `up --detach`, the other
commands finding the stack without an address, `status`, a refused second `up`, `down`,
graphs that persist between runs, a stale state file, `--fresh`, and Ctrl-C.

The example stack starts once (the module's fixture); the persistence checks start a
one-worker stack twice, which is quick.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard_cli.demo import REPO
from modelyard_cli.state import StackState, pid_alive, read_state

MODELYARD = str(Path(sys.executable).parent / "modelyard")
# The module's stack starts in its first test's setup, which that test's timeout covers:
# on two busy cores the start alone can take most of the default 120 s.
pytestmark = pytest.mark.timeout(300)

EXTRA_GRAPH = """\
name: extra
inputs:
  text: string
nodes:
  - {name: echoed, model: echo, inputs: {text: inputs.text}}
outputs:
  text: echoed.text
"""

ONE_WORKER_STACK = """\
workers:
  - worker_id: echoes
    models:
      - name: echo
        class: tests.support.models:Echo
"""


@dataclass
class Shell:
    """A new shell: the same environment, no address exported."""

    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 300, columns: int = 250
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MODELYARD, *args], cwd=REPO, env={**self.env, "COLUMNS": str(columns)},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@dataclass
class Running:
    shell: Shell
    work_dir: Path
    up: subprocess.CompletedProcess[str]
    state: StackState


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def stop(work_dir: Path) -> None:
    """Stops whatever stack a test left running in `work_dir`."""
    state = read_state(work_dir)
    if state is not None and pid_alive(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(state.pid), "the stack to stop")


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Shell:
    from tools.demo_models import prepare_models

    prepare_models()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_ADDRESS")}
    work_dir = tmp_path_factory.mktemp("stack")
    return Shell({**env, "MODELYARD_STACK_DIR": str(work_dir)})


@pytest.fixture(scope="module")
def running(shell: Shell) -> Iterator[Running]:
    work_dir = Path(shell.env["MODELYARD_STACK_DIR"])
    up = shell.run("up", "examples/stack.yaml", "--detach", columns=80)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = read_state(work_dir)
        assert state is not None
        yield Running(shell, work_dir, up, state)
    finally:
        stop(work_dir)


def test_up_detach_returns_once_ready_with_every_address_in_80_columns(running: Running) -> None:
    state = running.state
    assert state.ready and pid_alive(state.pid)  # the supervisor runs on in the background
    assert set(state.workers) == {"generators", "generators-2", "classifiers"}
    assert "inference-graph" in state.graphs
    lines = running.up.stdout.splitlines()
    assert "worker classifiers: loading bert, sentiment, zero-shot, embed, normalize" in lines
    assert "graphs: deployed graph inference-graph" in lines
    top = next(i for i, line in enumerate(lines) if line.startswith("╭─ stack ready"))
    panel = lines[top:]
    assert panel[-1].startswith("╰") and all(len(line) <= 80 for line in panel), panel
    for address in (state.etcd, state.control_plane, state.composer, *state.workers.values()):
        assert any(address in line for line in panel), address
    for url in state.metrics.values():  # etcd and each worker serve /metrics
        assert any(url in line for line in panel), url
    assert {"etcd", "worker generators"} <= set(state.metrics)
    assert "Traceback" not in running.up.stdout + running.up.stderr


def test_other_commands_find_the_stack_without_an_address(running: Running) -> None:
    listed = running.shell.run("graph", "list")
    assert listed.returncode == 0, listed.stderr
    assert "inference-graph" in listed.stdout
    workers = running.shell.run("workers")
    assert workers.returncode == 0, workers.stderr
    assert "generators" in workers.stdout and "classifiers" in workers.stdout
    extra = running.work_dir / "extra.yaml"
    extra.write_text(EXTRA_GRAPH)
    deployed = running.shell.run("graph", "deploy", str(extra))
    assert deployed.returncode == 0, deployed.stderr
    assert "extra" in running.shell.run("graph", "list").stdout


def test_status_reports_every_service_serving(running: Running) -> None:
    status = running.shell.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("etcd", "control plane", "worker generators-2", "composer"):
        row = next(line for line in status.stdout.splitlines() if f" {service} " in line)
        assert "SERVING" in row


def test_the_composer_sends_its_node_calls_to_workers_over_predict_many(running: Running) -> None:
    ran = running.shell.run("run", "inference-graph", "-i", "prompt=I have an idea!")
    assert ran.returncode == 0, ran.stderr
    url = running.state.metrics["worker classifiers"]
    with urllib.request.urlopen(url, timeout=10) as response:
        exposition = response.read().decode()
    calls = {
        (sample.labels["method"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "modelyard_worker_requests_total" and sample.labels["model"] == "bert"
    }
    # bert scores both generated texts: two calls a run, as messages of a stream
    assert calls.get(("/modelyard.v1.Predict/PredictMany", "OK"), 0) >= 2, calls
    assert ("/modelyard.v1.Predict/Predict", "OK") not in calls, calls


def test_a_second_up_is_refused_at_once_naming_the_running_stack(running: Running) -> None:
    for detach in ([], ["--detach"]):
        again = running.shell.run("up", "examples/stack.yaml", *detach, timeout=60)
        assert again.returncode == 2
        assert f"pid {running.state.pid}" in again.stderr
        assert f"composer {running.state.composer}" in again.stderr
        assert "Traceback" not in again.stdout + again.stderr
        assert "etcd: starting" not in again.stdout  # nothing was started
        assert read_state(running.work_dir) == running.state


def test_down_stops_every_service_and_removes_the_state_file(running: Running) -> None:
    state = running.state
    down = running.shell.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    for line in ("composer: stopping", "worker classifiers: stopped", "etcd: stopped"):
        assert any(printed.startswith(line) for printed in down.stdout.splitlines()), line
    assert down.stdout.splitlines()[-1] == "stack stopped"
    assert not pid_alive(state.pid)
    assert not (running.work_dir / "stack.json").exists()
    for address in (state.etcd, state.control_plane, state.composer, *state.workers.values()):
        host, port = address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port))):
            pass
    status = running.shell.run("status")
    assert status.returncode == 2
    assert "modelyard up" in status.stderr  # says how to start one
    assert running.shell.run("down").returncode == 2


def test_graphs_persist_between_runs_unless_fresh(running: Running, tmp_path: Path) -> None:
    stop(running.work_dir)  # the example stack, if this test runs alone
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(ONE_WORKER_STACK)
    # a state file whose supervisor is gone: cleaned up, not obeyed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (running.work_dir / "stack.json").write_text(
        f'{{"pid": {dead.pid}, "started_at": "x", "stack_file": "x"}}'
    )
    # the graph deployed to the example stack is still in etcd: it runs on this one
    again = running.shell.run("up", str(stack_file), "--run", "extra", "-i", "text=kept", "--once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"removed the state file of a stack that is gone (pid {dead.pid}" in again.stdout
    assert '"text": "kept"' in again.stdout

    fresh = subprocess.Popen(
        [MODELYARD, "up", str(stack_file), "--fresh"], cwd=REPO, env=running.shell.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (s := read_state(running.work_dir)) is not None and s.ready, "ready")
        listed = running.shell.run("graph", "list")
        assert listed.returncode == 0 and "extra" not in listed.stdout, listed.stdout
        fresh.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = fresh.communicate(timeout=120)
    finally:
        fresh.kill()
    assert fresh.returncode == 0, stdout + stderr
    assert "etcd: starting from empty data" in stdout
    lines = stdout.splitlines()
    stopping = lines[lines.index("SIGINT: stopping the stack") :]
    assert [line.split(" (")[0] for line in stopping] == [
        "SIGINT: stopping the stack",
        "gateway: stopping",
        "gateway: stopped",
        "composer: stopping",
        "composer: stopped",
        "worker echoes: stopping",
        "worker echoes: stopped",
        "control plane: stopping",
        "control plane: stopped",
        "etcd: stopping",
        "etcd: stopped",
        "stack stopped",
    ]
    assert not (running.work_dir / "stack.json").exists()
