"""Registered third-party APIs through the whole stack, all real and in this process: etcd,
a control plane that stores the registrations and health-checks them, a worker (Echo), a
composer running a graph that calls a registered name, and the gateway answering the
official `openai` client. The APIs are real local HTTP servers (tests.support.http_apis).

- "answers": two correct APIs and one erroring: every call is answered by a correct one
  (the erroring one fails over), and both correct ones take calls.
- "broken": a slow one, one answering the wrong shape, one erroring: every call fails,
  502 at the gateway (the routed client's three attempts all failed at an API); the
  composer's `routing.max_attempts` is 2, so its runs fail after two.
Cooldowns and recovery are the routed client's tests' (test_http_api_caller, FakeClock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc.aio
import openai
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from gateway.server import Gateway
from gateway.settings import GatewaySettings
from modelyard.composer_client import AsyncComposerClient
from modelyard.errors import Unavailable
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.http_api.settings import HttpApiSettings
from modelyard_server.routing import RoutingSettings
from tests.integration.conftest import running_worker
from tests.support.http_apis import FakeApi

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOOPBACK = ["127.0.0.1/32"]
BODY = '{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}}'
ASK: dict[str, Any] = {
    "name": "ask",
    "inputs": {"prompt": "string"},
    "nodes": [
        {"name": "ask", "model": "answers", "inputs": {"prompt": "inputs.prompt"}},
        {"name": "echo", "model": "echo", "inputs": {"text": "ask.text"}},
    ],
    "outputs": {"text": "echo.text"},
}


@dataclass
class Stack:
    plane: ControlPlane
    composer: Composer
    gateway: Gateway
    one: FakeApi
    two: FakeApi

    @property
    def base_url(self) -> str:
        return f"http://{self.gateway.address}/v1"


def registration(model: str, url: str, timeout_s: float = 10.0) -> cp.RegisterModelRequest:
    timeout = Duration()
    timeout.FromMilliseconds(int(timeout_s * 1000))
    api = cp.HttpApi(
        url_template=url,
        body_template=BODY,
        response_path="data.items[].attributes.answer",
        timeout=timeout,
    )
    return cp.RegisterModelRequest(model=model, owner="tests", http_api=api)


@pytest.fixture(scope="module")
def apis() -> Iterator[tuple[FakeApi, FakeApi]]:
    with FakeApi("one") as one, FakeApi("two") as two:
        yield one, two


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(apis: tuple[FakeApi, FakeApi]) -> AsyncIterator[Stack]:
    one, two = apis
    calling = HttpApiSettings(allowed_networks=LOOPBACK)
    with EtcdServer() as etcd:
        plane = ControlPlane(
            ControlPlaneSettings(
                port=0,
                etcd=etcd.settings(),
                http_api={"allowed_networks": LOOPBACK, "health_interval_s": 0.2},
            )
        )
        await plane.start()
        async with contextlib.AsyncExitStack() as running:
            running.push_async_callback(plane.stop)
            await running.enter_async_context(
                running_worker(
                    [{"name": "echo", "class": "tests.support.models:Echo"}], etcd=etcd.settings()
                )
            )
            async with grpc.aio.insecure_channel(plane.address) as channel:
                admin = controlplane_pb2_grpc.ControlPlaneStub(channel)
                for request in (
                    registration("answers", one.url("/good")),
                    registration("answers", two.url("/good")),
                    registration("answers", one.url("/error")),
                    registration("broken", one.url("/slow"), timeout_s=0.3),
                    registration("broken", two.url("/wrong")),
                    registration("broken", two.url("/error")),
                ):
                    await admin.RegisterModel(request, timeout=10)
            composer = Composer(
                ComposerSettings(
                    port=0,
                    etcd=etcd.settings(),
                    controlplanes=[plane.address],
                    http_api=calling,
                    # its own, where the gateway keeps the default three
                    routing=RoutingSettings(max_attempts=2),
                )
            )
            await composer.start()
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            running.push_async_callback(composer.stop)
            gateway = Gateway(
                GatewaySettings(
                    port=0,
                    controlplanes=[plane.address],
                    composer=composer.address,
                    http_api=calling,
                )
            )
            await gateway.start()
            running.push_async_callback(gateway.stop)
            for model, count in (("answers", 3), ("broken", 3), ("echo", 1)):
                await _until_served(gateway, model, count)
                await _until_served(composer, model, count)
            async with AsyncComposerClient(composer.address, timeout=30) as graphs:
                await graphs.deploy(ASK)
            yield Stack(plane, composer, gateway, one, two)


async def _until_served(service: Gateway | Composer, model: str, count: int) -> None:
    """Until `service`'s routed client has `count` replicas of `model` (registrations join
    the endpoint set once the control plane's first health check passed)."""
    for _ in range(300):
        found = await service.routed.wait_for_endpoints(model, timeout=10)
        if len(found) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model}: {len(found)} replicas, expected {count}")


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=stack.base_url, api_key="unused", max_retries=0
    ) as client:
        yield client


def _served_by(stack: Stack, answers: list[str]) -> set[str]:
    assert all(a.split(": ", 1)[0] in ("one", "two") for a in answers), answers
    return {a.split(": ", 1)[0] for a in answers}


async def test_the_model_list_holds_the_registered_names_and_the_graph(
    client: openai.AsyncOpenAI,
) -> None:
    listed = {
        model.id: (model.model_extra or {})["task"] for model in (await client.models.list()).data
    }
    assert listed["answers"] == listed["broken"] == "http-api"
    assert listed["ask"] == "graph"
    assert "echo" not in listed  # a worker's echo model is no OpenAI model


async def test_chat_and_completions_are_answered_by_the_correct_apis(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    answers = []
    for i in range(12):
        chat = await client.chat.completions.create(
            model="answers", messages=[{"role": "user", "content": f"q{i}"}], temperature=0.5
        )
        assert chat.choices[0].finish_reason == "stop"
        content = chat.choices[0].message.content
        assert content is not None and content.endswith(f": q{i}")
        answers.append(content)
        completion = await client.completions.create(model="answers", prompt=f"p{i}")
        assert completion.choices[0].text.endswith(f": p{i}")
        answers.append(completion.choices[0].text)
    assert _served_by(stack, answers) == {"one", "two"}  # balanced over both correct ones
    assert {"prompt": "q0", "temperature": 0.5} in [
        r.body for api in (stack.one, stack.two) for r in api.requests
    ]


async def test_a_conversation_is_sent_as_one_text(stack: Stack, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(
        model="answers",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
    )
    prompts = [r.body["prompt"] for api in (stack.one, stack.two) for r in api.requests]
    assert "system: Be brief.\nuser: Hello" in prompts


async def test_a_streamed_chat_is_the_answer_in_one_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="answers", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    text = "".join(p for p in pieces if p)
    assert text.endswith(": streamed")


async def test_an_api_that_fails_every_call_is_a_502_with_openais_body(
    client: openai.AsyncOpenAI,
) -> None:
    for _ in range(4):  # first failing for real, then cooling down: 502 all along
        with pytest.raises(openai.InternalServerError) as caught:
            await client.completions.create(model="broken", prompt="hi")
        assert caught.value.status_code == 502
        body: Any = caught.value.body
        assert body["type"] == "server_error" and body["code"] == "upstream_error"
        assert "model 'broken' unavailable after 3 attempts" in body["message"]


async def test_a_graph_calls_the_registered_name(stack: Stack) -> None:
    async with AsyncComposerClient(stack.composer.address, timeout=30) as graphs:
        result = await graphs.run("ask", {"prompt": "in a graph"})
    assert result.outputs["text"] in ("one: in a graph", "two: in a graph")
    ask = next(node for node in result.timeline if node.node == "ask")
    assert ask.status == "ok" and ask.workers[0].startswith("api-")


async def test_the_graph_is_a_model_of_the_gateway_too(client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(model="ask", prompt="via the graph")
    assert completion.choices[0].text.endswith(": via the graph")


async def test_a_graph_node_on_a_broken_name_fails_the_run_as_unavailable(stack: Stack) -> None:
    ask, echo = ASK["nodes"]
    broken = {**ASK, "name": "broken-ask", "nodes": [{**ask, "model": "broken"}, echo]}
    async with AsyncComposerClient(stack.composer.address, timeout=30) as graphs:
        await graphs.deploy(broken)
        # the composer's routing.max_attempts: 2 (the gateway's three, above, are the default)
        with pytest.raises(Unavailable, match="unavailable after 2 attempts"):
            await graphs.run("broken-ask", {"prompt": "hi"})
