"""`modelyard up --tls` as a user drives it from shells: a one-worker stack with a
throwaway CA, where the other commands (status, run, drain) work without a flag, a
plaintext connection and an admin call without the stack's token are refused, and `down`
stops it."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.composer_client import ComposerClient
from modelyard.errors import Unauthenticated
from modelyard_cli.state import StackState, pid_alive, read_state
from modelyard_server.tls import client_credentials

MODELYARD = str(Path(sys.executable).parent / "modelyard")
REPO = Path(__file__).resolve().parents[2]

STACK = """\
workers:
  - worker_id: echoes
    models:
      - name: echo
        class: tests.support.models:Echo
graphs: [say.yaml]
"""
SAY = """\
name: say
inputs:
  text: string
nodes:
  - {name: echoed, model: echo, inputs: {text: inputs.text}}
outputs:
  text: echoed.text
"""


def modelyard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MODELYARD, *args], cwd=REPO, env={**env, "COLUMNS": "80"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@dataclass
class Running:
    env: dict[str, str]  # a shell's: only where the stack lives is exported
    up: subprocess.CompletedProcess[str]
    state: StackState

    def modelyard(self, *args: str) -> subprocess.CompletedProcess[str]:
        return modelyard(self.env, *args)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("tls-stack")
    (folder / "stack.yaml").write_text(STACK)
    (folder / "say.yaml").write_text(SAY)
    work_dir = folder / "state"
    # a new shell: no addresses or credentials exported, only where the stack lives
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["MODELYARD_STACK_DIR"] = str(work_dir)
    up = modelyard(env, "up", str(folder / "stack.yaml"), "--tls", "--detach")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = read_state(work_dir)
        assert state is not None
        yield Running(env, up, state)
    finally:
        down = modelyard(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert read_state(work_dir) is None


def test_the_ready_panel_says_tls_is_on_and_where_the_ca_is(running: Running) -> None:
    state = running.state
    assert state.tls and Path(state.ca_file).is_file()
    panel = running.up.stdout
    assert "tls     on: every service trusts the stack's CA" in panel
    assert "ca.pem" in panel  # where it is (the full path, wrapped in 80 columns)
    assert f"OPENAI_BASE_URL=https://{state.gateway}/v1" in panel
    assert all(len(line) <= 80 for line in panel.splitlines())


def test_status_checks_every_service_over_tls(running: Running) -> None:
    status = running.modelyard("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"TLS on: CA {running.state.ca_file}" in status.stdout


def test_run_and_drain_work_without_a_flag(running: Running) -> None:
    run = running.modelyard("run", "say", "-i", "text=over tls")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "over tls" in run.stdout
    for command in ("drain", "undrain"):  # admin RPCs: the stack's token, from its state
        done = running.modelyard(command, "echoes")
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("service", ["composer", "control_plane", "worker"])
def test_a_plaintext_connection_fails(running: Running, service: str) -> None:
    state = running.state
    address = state.workers["echoes"] if service == "worker" else getattr(state, service)
    with (
        grpc.insecure_channel(address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_admin_call_over_tls_without_the_token_is_unauthenticated(running: Running) -> None:
    trusting = client_credentials(Path(running.state.ca_file))
    with ComposerClient(running.state.composer, credentials=trusting, timeout=10) as client:
        assert [graph.name for graph in client.list()] == ["say"]  # listing stays open
        with pytest.raises(Unauthenticated):
            client.delete("say")


def test_etcd_requires_the_stacks_client_certificate(running: Running) -> None:
    trusting = ssl.create_default_context(cafile=running.state.ca_file)
    url = f"https://{running.state.etcd}/health"
    with pytest.raises(urllib.error.URLError):  # the handshake fails without a certificate
        urllib.request.urlopen(url, timeout=5, context=trusting)
    trusting.load_cert_chain(running.state.cert_file, running.state.key_file)
    with urllib.request.urlopen(url, timeout=5, context=trusting) as reply:
        assert json.loads(reply.read())["health"] == "true"


def test_the_gateway_serves_https_with_the_stacks_ca(running: Running) -> None:
    trusting = ssl.create_default_context(cafile=running.state.ca_file)
    with openai.OpenAI(
        base_url=f"https://{running.state.gateway}/v1",
        api_key="unused: the stack sets no API keys",
        http_client=openai.DefaultHttpxClient(verify=trusting),
        max_retries=0,
    ) as client:
        assert "say" in {model.id for model in client.models.list()}  # over the composer's TLS


def test_the_token_reaches_no_log(running: Running) -> None:
    token = Path(running.state.token_file).read_text().strip()
    work_dir = Path(running.env["MODELYARD_STACK_DIR"])
    for log in work_dir.glob("*.log"):
        assert token not in log.read_text(errors="replace"), log
    assert pid_alive(running.state.pid)
