"""`modelyard models register | list | offline | online | remove` against real processes
(etcd, a control plane with an admin token) and a real local HTTP server standing in for a
third-party API: what an operator types, what they read back, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import start_service, stop_service
from tests.integration.api_server import ApiServer

MODELYARD = str(Path(sys.executable).parent / "modelyard")
ADMIN = "cli-models-admin-token"


@pytest.fixture(scope="module")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("tokens") / "admin"
    tokens.write_text(f"{ADMIN}\n")
    env = {
        "MODELYARD_CONTROLPLANE_HTTP_API__ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        "MODELYARD_CONTROLPLANE_HTTP_API__HEALTH_INTERVAL_S": "0.1",
        "MODELYARD_CONTROLPLANE_AUTH__ADMIN_TOKENS_FILE": str(tokens),
    }
    with EtcdServer() as etcd:
        plane, address = start_service(
            ["controlplane", "--etcd", etcd.endpoint], timeout=60, env=env
        )
        try:
            yield address
        finally:
            if plane.poll() is None:
                stop_service(plane)


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    server.start()
    yield server
    server.stop()


def modelyard(
    controlplane: str, *args: str, token: str = ADMIN
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COLUMNS": "200",
        "MODELYARD_CONTROLPLANE_ADDRESS": controlplane,
        "MODELYARD_TOKEN": token,
    }
    done = subprocess.run([MODELYARD, *args], capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def listed(controlplane: str) -> list[dict[str, Any]]:
    done = modelyard(controlplane, "models", "list", "--json", token="")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def test_register_list_offline_online_remove(
    controlplane: str, api: ApiServer, tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}')
    registered = modelyard(
        controlplane, "models", "register", "answers",
        "--url", f"{api.url}/v1/answer", "--body-file", str(body),
        "--response-path", "data.items[].attributes.answer",
        "--header", "Authorization: Bearer ${ANSWERS_KEY}", "--header", "X-Team: blue",
        "--owner", "team-a", "--health-url", f"{api.url}/health",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    api_id = registered.stdout.split()[1]
    assert api_id.startswith("api-")

    until(lambda: [(r["registration_id"], r["healthy"]) for r in listed(controlplane)]
          == [(api_id, True)])  # fmt: skip
    [shown] = listed(controlplane)
    assert shown["model"] == "answers" and shown["owner"] == "team-a"
    assert shown["http_api"]["headers"] == {
        "Authorization": "Bearer ${ANSWERS_KEY}",
        "X-Team": "<redacted>",
    }
    table = modelyard(controlplane, "models", "list")
    assert table.returncode == 0
    assert api_id in table.stdout and "online" in table.stdout and "healthy" in table.stdout

    assert modelyard(controlplane, "models", "offline", api_id).stdout.strip() == (
        f"{api_id} is offline"
    )
    until(lambda: listed(controlplane)[0]["online"] is False)
    assert modelyard(controlplane, "models", "online", api_id).returncode == 0
    until(lambda: listed(controlplane)[0]["online"] is True)

    assert modelyard(controlplane, "models", "remove", api_id).returncode == 0
    until(lambda: listed(controlplane) == [])
    gone = modelyard(controlplane, "models", "remove", api_id)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"error: NOT_FOUND: registration '{api_id}' does not exist")


def test_refusals_are_one_line(controlplane: str, api: ApiServer) -> None:
    def register(*extra: str, token: str = ADMIN) -> subprocess.CompletedProcess[str]:
        return modelyard(
            controlplane, "models", "register", "answers", "--url", f"{api.url}/v1",
            "--response-path", "answer", *extra, token=token,
        )  # fmt: skip

    literal = register("--body", '{"q": {USER_PROMPT}}', "--header", "Authorization: sk-live-1")
    assert literal.returncode == 1
    assert literal.stderr.startswith("error: INVALID_ARGUMENT: header Authorization carries")
    assert "sk-live" not in literal.stderr
    assert len(literal.stderr.strip().splitlines()) == 1

    no_prompt = register("--body", '{"q": "fixed"}')
    assert "must hold {USER_PROMPT}" in no_prompt.stderr

    no_token = register("--body", '{"q": {USER_PROMPT}}', token="")
    assert no_token.returncode == 1
    assert no_token.stderr.startswith("error: UNAUTHENTICATED")

    missing = register("--body-file", "/nonexistent/body.json")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "error: /nonexistent/body.json: No such file or directory",
    )
    bad_header = register("--body", '{"q": {USER_PROMPT}}', "--header", "no colon")
    assert bad_header.returncode == 2
    assert "'Name: value'" in bad_header.stderr
