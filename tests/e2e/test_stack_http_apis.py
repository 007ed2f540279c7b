"""The README's third-party API flow in the local stack, as `modelyard up` runs it: each
service its own process (`modelyard_cli.stack`), an API registered with the real
`modelyard models register` command, then called by name through the gateway with the
official `openai` client and as a graph node through the composer. The API is a real local
HTTP server on 127.0.0.1, which the stack's services may call (the SSRF guard's one local
exception); a private address stays refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from modelyard.composer_client import ComposerClient
from modelyard_cli.stack import Stack
from tests.support.http_apis import FakeApi

pytestmark = pytest.mark.slow

MODELYARD = str(Path(sys.executable).parent / "modelyard")
BODY = '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}'
ASK = {
    "name": "ask",
    "inputs": {"prompt": "string"},
    "nodes": [
        {"name": "ask", "model": "answers", "inputs": {"prompt": "inputs.prompt"}},
        {"name": "echo", "model": "echo", "inputs": {"text": "ask.text"}},
    ],
    "outputs": {"text": "echo.text"},
}


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApi]:
    with FakeApi("local") as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("http-api-stack")
    models = [{"name": "echo", "class": "tests.support.models:Echo"}]
    stack_file = folder / "stack.yaml"
    stack_file.write_text(yaml.safe_dump({"workers": [{"worker_id": "w", "models": models}]}))
    running = Stack(stack_file, work_dir=folder / "state")
    try:
        running.start()
        yield running
    finally:
        running.stop()


def modelyard(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MODELYARD_CONTROLPLANE_ADDRESS": stack.control_plane}
    return subprocess.run(
        [MODELYARD, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def register(stack: Stack, url: str) -> subprocess.CompletedProcess[str]:
    return modelyard(
        stack, "models", "register", "answers", "--url", url, "--body", BODY,
        "--response-path", "data.items[].attributes.answer", "--owner", "tests",
    )  # fmt: skip


@pytest.fixture(scope="module")
def registered(stack: Stack, api: FakeApi) -> str:
    done = register(stack, api.url("/good"))
    assert done.returncode == 0, done.stderr
    listed = modelyard(stack, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    return str(entry["registration_id"])


def test_a_private_address_is_refused_by_the_stack(stack: Stack) -> None:
    done = register(stack, "http://10.1.2.3:8080/answer")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "10.1.2.3" in done.stderr


def test_the_gateway_answers_for_the_registered_name(
    stack: Stack, api: FakeApi, registered: str
) -> None:
    base_url = f"http://{stack.gateway}/v1"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        deadline = time.monotonic() + 60  # the name is served once its first check passed
        while "answers" not in {m.id for m in client.models.list()}:
            assert time.monotonic() < deadline, "the registration never joined the model list"
            time.sleep(0.2)
        chat = client.chat.completions.create(
            model="answers", messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
    assert chat.choices[0].message.content == "local: What is 2 + 2?"
    assert api.paths()[-1] == "/good"


def test_a_graph_node_calls_the_registered_name(stack: Stack, registered: str) -> None:
    with ComposerClient(stack.composer, timeout=60) as composer:
        composer.deploy(ASK)
        result = composer.run("ask", prompt="hello")
    assert result.outputs["text"] == "local: hello"
