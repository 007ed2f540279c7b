"""The command line's answer to a user's mistake, as a user meets it (real `modelyard`
processes): one short message naming what is wrong, exit code 2, and no traceback unless
--verbose asks for one. The README's mistakes table lists these cases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard_cli.etcd_server import free_port

MODELYARD = str(Path(sys.executable).parent / "modelyard")
ECHO = "models:\n  - {name: echo, class: 'tests.support.models:Echo'}\n"


def modelyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # 80 columns, as a terminal would be: a message must not depend on the width
    env = {**os.environ, "COLUMNS": "80", **(env or {})}
    return subprocess.run([MODELYARD, *args], capture_output=True, text=True, env=env, timeout=120)


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single "error: ..." line a mistake prints (and nothing on stdout)."""
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert done.stdout == ""
    return lines[0]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


# --- files that are missing, or not YAML ----------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "worker --config {file}",
        "controlplane --config {file}",
        "composer --config {file}",
        "graph deploy {file} --composer 127.0.0.1:1",
    ],
)
def test_a_missing_file_is_named(tmp_path: Path, command: str) -> None:
    missing = str(tmp_path / "missing.yaml")
    done = modelyard(*command.format(file=missing).split())
    assert f"{missing}: No such file or directory" in one_line_error(done)


def test_up_with_a_missing_stack_file_exits_2(tmp_path: Path) -> None:
    done = modelyard("up", str(tmp_path / "missing.yaml"), "--work-dir", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert "missing.yaml" in done.stderr


@pytest.mark.parametrize("service", ["worker", "controlplane", "composer"])
def test_a_yaml_error_names_the_file_and_line(tmp_path: Path, service: str) -> None:
    config = write(tmp_path, "settings.yaml", "host: 127.0.0.1\nport: [\n")
    line = one_line_error(modelyard(service, "--config", config))
    assert f"{config}, line 3: expected the node content" in line
    assert "<unicode string>" not in line


def test_a_graph_file_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    graph = write(tmp_path, "graph.yaml", "name: g\nnodes:\n  - {name: a, model: m\n")
    line = one_line_error(modelyard("graph", "validate", graph, "--composer", "127.0.0.1:1"))
    assert f"{graph}, line 4:" in line


# --- files that do not fit their schema ----------------------------------------------


@pytest.mark.parametrize(
    ("service", "text", "expected"),
    [
        (
            "worker",
            "models:\n  - {name: a, sorce: org/model}\n",
            "models[0].sorce: unknown setting (did you mean 'source'?)",
        ),
        ("worker", ECHO + "lease_ttl: 0\n", "lease_ttl: Input should be greater than or equal"),
        ("controlplane", "etcd: {endpoint: ['x:1']}\n", "did you mean 'endpoints'?"),
        ("composer", "polcy: p2c\n", "polcy: unknown setting (did you mean 'policy'?)"),
        (
            "composer",
            "routing: {max_atempts: 2}\n",
            "routing.max_atempts: unknown setting (did you mean 'max_attempts'?)",
        ),
        (
            "gateway",
            "routing: {max_attempts: 0}\n",
            "routing.max_attempts: Input should be greater than or equal to 1, got 0",
        ),
    ],
)
def test_a_schema_error_names_the_field(
    tmp_path: Path, service: str, text: str, expected: str
) -> None:
    line = one_line_error(modelyard(service, "--config", write(tmp_path, "s.yaml", text)))
    assert expected in line
    assert "pydantic" not in line


def test_a_misspelt_graph_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    graph = write(tmp_path, "g.yaml", "name: g\nnodes:\n  - {name: a, modle: m}\n")
    line = one_line_error(modelyard("graph", "deploy", graph, "--composer", "127.0.0.1:1"))
    assert "node 'a': unknown key 'modle' (did you mean 'model'?)" in line


def test_an_empty_workers_list_is_refused(tmp_path: Path) -> None:
    stack = write(tmp_path, "stack.yaml", "workers: []\n")
    done = modelyard("up", stack, "--work-dir", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert "workers" in done.stderr


# --- what a service needs at start: its port, and etcd ---------------------------------


@pytest.mark.parametrize("service", ["worker", "controlplane", "composer"])
def test_a_busy_port_is_one_line_naming_it(tmp_path: Path, taken: int, service: str) -> None:
    config = write(tmp_path, "s.yaml", ECHO if service == "worker" else "{}\n")
    line = one_line_error(modelyard(service, "--config", config, "--port", str(taken)))
    assert line.startswith(f"error: port {taken} is already in use on 127.0.0.1")


@pytest.mark.parametrize("service", ["worker", "controlplane", "composer"])
def test_an_unreachable_etcd_is_one_line(tmp_path: Path, service: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    settings = (ECHO if service == "worker" else "") + "etcd: {timeout: 1}\n"
    config = write(tmp_path, "s.yaml", settings)
    line = one_line_error(modelyard(service, "--config", config, "--etcd", nobody, "--port", "0"))
    assert line.startswith(f"error: cannot reach etcd at {nobody} within 1 s (")


@pytest.mark.parametrize("service", ["worker", "controlplane", "composer", "gateway"])
@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER='console': only otlp"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:port"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='http://jaeger:port': the port is not a number",
        ),
    ],
)
def test_tracing_it_cannot_run_is_one_line_before_it_starts(
    tmp_path: Path, service: str, variables: dict[str, str], expected: str
) -> None:
    # nothing listens at etcd's address: the mistake is told before anything is reached
    config = write(tmp_path, "s.yaml", ECHO if service == "worker" else "{}\n")
    line = one_line_error(modelyard(service, "--config", config, env=variables))
    assert line.startswith("error: invalid ") and expected in line


# --- clients -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["graph", "list", "--composer"], "the composer"),
        (["workers", "--controlplane"], "the control plane"),
        (["models", "list", "--controlplane"], "the control plane"),
        (["models", "served"], "the worker"),
    ],
)
def test_a_server_that_is_not_there_is_one_line(command: list[str], what: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    line = one_line_error(modelyard(*command, address), code=1)
    assert line.startswith(f"error: cannot reach {what} at {address} (Connection refused)")


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, "settings.yaml", "port: [\n")
    done = modelyard("worker", "--config", config, "--verbose")
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: invalid worker config: ")
