"""The gateway with the official `openai` client in front of a real etcd, control plane,
workers (tiny-gpt2-chat as llm/v1/chat, tiny GPT-2 as llm/v1/completions, the real MiniLM
as llm/v1/embeddings) and a composer with a deployed text-output graph, all in this
process: answers match what the workers and the composer give over gRPC, streams add up
to the unary answers, and every failure is OpenAI's error body with its status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from gateway.server import Gateway
from gateway.settings import GatewaySettings
from modelyard.client import AsyncClient
from modelyard.composer_client import AsyncComposerClient
from modelyard.model import LoadContext, Model, Outputs, Request
from modelyard.signature import Field
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from tests.helpers import eventually, leave_a_chat_stream
from tests.integration.conftest import running_worker
from tests.support import models as support_models
from tests.support.models import Gate
from workers.server import Worker

pytestmark = pytest.mark.asyncio(loop_scope="module")


def said(text: str) -> list[ChatCompletionMessageParam]:
    """A conversation of one user message."""
    return [{"role": "user", "content": text}]


HELLO = said("Hello there")
# A graph is a model: one string input, an output named `text`. `gen` streams because a
# node streams from it (the composer calls a node nobody streams from with Predict).
STORY = {
    "name": "story",
    "inputs": {"prompt": "string"},
    "nodes": [
        {
            "name": "gen",
            "model": "complete",
            "inputs": {"prompt": "inputs.prompt"},
            "parameters": {"max_tokens": 6},
        },
        {
            "name": "each",
            "model": "echo",
            "inputs": {"text": "gen.choices.0.text"},
            "stream": "chunk",
        },
    ],
    "outputs": {"text": "gen.choices.0.text"},
}
# not a model: its output is not text
LABELS = {**STORY, "name": "labels", "outputs": {"label": "gen.choices.0.text"}}


class HeldChat(Model):
    """An llm/v1/chat model that answers only once the test opens its gate (option
    `gate`): a call held in it keeps a replica busy for as long as the test needs. A gate
    still shut after two minutes fails the call, so no model thread waits for good."""

    task = "llm/v1/chat"
    inputs = (Field("messages", "list", "The conversation.", element_kind="map"),)

    def load(self, context: LoadContext) -> None:
        self.gate = Path(context.options["gate"])

    def predict(self, batch: list[Request]) -> list[Outputs]:
        give_up = time.monotonic() + 120
        while not self.gate.exists():
            if time.monotonic() > give_up:
                raise TimeoutError(f"gate {self.gate} still shut")
            time.sleep(0.005)
        message = {"role": "assistant", "content": "released"}
        return [
            {
                "id": "chatcmpl-held",
                "object": "chat.completion",
                "created": 0,
                "model": "held",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            for _ in batch
        ]


@dataclass
class Cluster:
    gateway: Gateway
    llm: Worker
    held: Worker
    plane: ControlPlane
    composer: Composer
    gates: dict[str, Gate]

    @property
    def base_url(self) -> str:
        return f"http://{self.gateway.address}/v1"


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gate]]:
    folder = tmp_path_factory.mktemp("gates")
    found = {name: Gate(folder / name) for name in ("shed", "slow")}
    yield found
    for gate in found.values():  # a failed test must not leave a model thread waiting
        gate.open()


def llm_models(checkpoints: dict[str, Path], minilm: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": "chat",
            "source": str(checkpoints["tiny-gpt2-chat"]),
            "task": "llm/v1/chat",
            "parameters": {"max_tokens": 8},
            "batching": {"max_batch_size": 4, "max_wait_ms": 2},
        },
        {"name": "complete", "source": str(checkpoints["tiny-gpt2"]), "task": "llm/v1/completions"},
        {"name": "embed", "source": str(minilm), "task": "llm/v1/embeddings"},
        {"name": "echo", "class": "tests.support.models:Echo"},
    ]


class EndlessChat(support_models.EndlessChat):
    """`tests.support.models.EndlessChat`, answering "short" when called unary."""

    content = "short"


def held_models(gates: dict[str, Gate]) -> list[dict[str, Any]]:
    one_at_a_time = {"max_batch_size": 1, "max_queue_size": 1}
    held = [
        {
            "name": name,
            "class": "tests.integration.test_gateway:HeldChat",
            "batching": one_at_a_time,
            "options": {"gate": str(gate)},
        }
        for name, gate in gates.items()
    ]
    return [*held, {"name": "endless", "class": "tests.integration.test_gateway:EndlessChat"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tiny_checkpoints: dict[str, Path], minilm_path: Path, gates: dict[str, Gate]
) -> AsyncIterator[Cluster]:
    with EtcdServer() as etcd:
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
        await plane.start()
        async with (
            running_worker(
                llm_models(tiny_checkpoints, minilm_path), etcd=etcd.settings(), strict=True
            ) as llm,
            running_worker(held_models(gates), etcd=etcd.settings(), worker_id="held") as held,
        ):
            composer = Composer(
                ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
            )
            await composer.start()
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            gateway = Gateway(
                GatewaySettings(port=0, controlplanes=[plane.address], composer=composer.address)
            )
            await gateway.start()
            try:
                for model in ("chat", "complete", "embed", "endless", *gates):
                    assert await gateway.routed.wait_for_endpoints(model, timeout=30), model
                async with AsyncComposerClient(composer.address, timeout=30) as graphs:
                    await graphs.deploy(STORY)
                    await graphs.deploy(LABELS)
                yield Cluster(gateway, llm, held, plane, composer, gates)
            finally:
                await gateway.stop()
                await composer.stop()
        await plane.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(cluster: Cluster) -> AsyncIterator[openai.AsyncOpenAI]:
    # no retries: a 429 or 503 is what the test looks at, not something to wait out
    async with openai.AsyncOpenAI(
        base_url=cluster.base_url, api_key="unused", max_retries=0
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    """The llm worker over gRPC, to compare the gateway's answers with."""
    async with AsyncClient(cluster.llm.address, timeout=60) as direct:
        yield direct


# -- the model list ------------------------------------------------------------------------


async def test_the_model_list_holds_the_llm_models_and_the_text_graph(
    client: openai.AsyncOpenAI,
) -> None:
    listed = {model.id: model for model in (await client.models.list()).data}
    assert sorted(listed) == ["chat", "complete", "embed", "endless", "shed", "slow", "story"]
    assert listed["chat"].owned_by == "modelyard" and listed["chat"].created > 0
    tasks = {name: (model.model_extra or {})["task"] for name, model in listed.items()}
    assert tasks["embed"] == "llm/v1/embeddings" and tasks["story"] == "graph"
    assert (await client.models.retrieve("story")).id == "story"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("labels")


# -- chat ----------------------------------------------------------------------------------


async def test_chat_answers_what_the_worker_answers_under_the_name_asked_for(
    client: openai.AsyncOpenAI, worker: AsyncClient
) -> None:
    answer = await client.chat.completions.create(model="chat", messages=HELLO, max_tokens=5)
    direct = (await worker.predict("chat", messages=HELLO, parameters={"max_tokens": 5})).outputs
    assert answer.model == "chat"  # the worker names its checkpoint; the client asked for chat
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    [choice] = answer.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == direct["choices"][0]["message"]["content"]
    assert choice.finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.model_dump(exclude_none=True) == direct["usage"]
    assert answer.usage.completion_tokens == 5


async def test_the_sync_client_gets_the_same_answer(
    cluster: Cluster, client: openai.AsyncOpenAI
) -> None:
    with openai.OpenAI(base_url=cluster.base_url, api_key="unused", max_retries=0) as sync:
        answer = await asyncio.to_thread(
            lambda: sync.chat.completions.create(model="chat", messages=HELLO, max_tokens=4)
        )
    again = await client.chat.completions.create(model="chat", messages=HELLO, max_tokens=4)
    assert answer.choices[0].message.content == again.choices[0].message.content


async def test_a_streamed_chat_adds_up_to_the_unary_answer(client: openai.AsyncOpenAI) -> None:
    unary = await client.chat.completions.create(model="chat", messages=HELLO)
    pieces: list[str] = []
    finish_reasons = []
    usage = None
    stream = await client.chat.completions.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    async for chunk in stream:
        assert chunk.model == "chat" and chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []  # the usage chunk comes alone, last
            continue
        [choice] = chunk.choices
        pieces.append(choice.delta.content or "")
        finish_reasons.append(choice.finish_reason)
    assert "".join(pieces) == unary.choices[0].message.content
    assert finish_reasons[-1] == "length" and set(finish_reasons[:-1]) == {None}
    assert usage is not None and unary.usage is not None
    assert usage.model_dump() == unary.usage.model_dump()


async def test_server_sent_events_end_with_done(cluster: Cluster) -> None:
    body = {"model": "chat", "messages": HELLO, "max_tokens": 3, "stream": True}
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as http:
        response = await http.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-1])


async def test_a_client_that_leaves_a_stream_stops_the_generation(
    cluster: Cluster, client: openai.AsyncOpenAI
) -> None:
    body = {"model": "endless", "messages": HELLO, "stream": True}
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as http:
        await leave_a_chat_stream(http, body)
    # the stream held the model's only thread: this is answered once it has stopped
    answer = await client.chat.completions.create(model="endless", messages=HELLO, timeout=30)
    assert answer.choices[0].message.content == "short"


async def test_n_choices_when_sampling(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="chat", messages=HELLO, n=3, temperature=1.0, seed=7, max_tokens=4
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 12


# -- completions and embeddings ------------------------------------------------------------


async def test_completions_with_a_stop_sequence(
    client: openai.AsyncOpenAI, worker: AsyncClient
) -> None:
    asked = {"temperature": 1.0, "seed": 3, "max_tokens": 6}
    free = await client.completions.create(
        model="complete", prompt="The cat", temperature=1.0, seed=3, max_tokens=6
    )
    text = free.choices[0].text
    direct = (await worker.predict("complete", prompt="The cat", parameters=asked)).outputs
    assert text == direct["choices"][0]["text"] and free.object == "text_completion"
    stop = text.split()[1]
    stopped = await client.completions.create(
        model="complete", prompt="The cat", temperature=1.0, seed=3, max_tokens=6, stop=[stop]
    )
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


async def test_streamed_completions_add_up(client: openai.AsyncOpenAI) -> None:
    unary = await client.completions.create(model="complete", prompt="Once", max_tokens=6)
    stream = await client.completions.create(
        model="complete", prompt="Once", max_tokens=6, stream=True
    )
    pieces = [chunk.choices[0].text async for chunk in stream]
    assert "".join(pieces) == unary.choices[0].text


async def test_embeddings_of_the_real_minilm_in_both_encodings(
    client: openai.AsyncOpenAI, worker: AsyncClient
) -> None:
    texts = ["A man is playing a guitar.", "Someone plays an instrument."]
    default = await client.embeddings.create(model="embed", input=texts)  # base64 on the wire
    floats = await client.embeddings.create(model="embed", input=texts, encoding_format="float")
    direct = (await worker.predict("embed", input=texts)).outputs
    assert default.model == "embed" and [d.index for d in default.data] == [0, 1]
    for got, plain, expected in zip(default.data, floats.data, direct["data"], strict=True):
        assert len(got.embedding) == 384
        assert plain.embedding == expected["embedding"]
        # base64 carries float32: equal to the floats within float32's precision
        assert np.allclose(got.embedding, expected["embedding"], rtol=0, atol=1e-7)
    assert default.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 0


# -- a graph as a model --------------------------------------------------------------------


async def test_a_graph_answers_completions_and_chat(
    cluster: Cluster, client: openai.AsyncOpenAI
) -> None:
    async with AsyncComposerClient(cluster.composer.address, timeout=60) as graphs:
        ran = (await graphs.run("story", prompt="Once upon")).outputs["text"]
    completed = await client.completions.create(model="story", prompt="Once upon")
    assert completed.model == "story" and completed.choices[0].text == ran
    chatted = await client.chat.completions.create(model="story", messages=said("Once upon"))
    assert chatted.choices[0].message.content == ran
    assert chatted.choices[0].finish_reason == "stop"


async def test_a_streamed_graph_adds_up_to_its_text(client: openai.AsyncOpenAI) -> None:
    unary = await client.chat.completions.create(model="story", messages=said("Once upon"))
    stream = await client.chat.completions.create(
        model="story", messages=said("Once upon"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == unary.choices[0].message.content
    assert len(chunks) > 3  # the graph's node streamed: several pieces, not one at the end
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_graph_takes_one_user_message(client: openai.AsyncOpenAI) -> None:
    two: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="story", messages=two)
    assert caught.value.param == "messages"


# -- errors --------------------------------------------------------------------------------


async def test_an_unknown_model_is_404_in_openais_shape(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="nobody", messages=HELLO)
    assert caught.value.status_code == 404
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "nobody" in body["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"top_p": 0}, "top_p"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": "Hello"}, "messages"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"frobnicate": True}, "frobnicate"),
        (
            {"messages": [{"role": "user", "content": "Hi", "tool_call_id": "x"}]},
            "messages[0].tool_call_id",
        ),
        # the worker's INVALID_ARGUMENT, naming its field
        ({"n": 2}, "n"),  # greedy decoding would repeat one answer twice
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_a_bad_field_is_400_naming_it(
    client: openai.AsyncOpenAI, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        # extra_body: sent as it is, past the client's own typing (it wins over messages)
        await client.chat.completions.create(model="chat", messages=HELLO, extra_body=change)
    assert caught.value.param == param, caught.value.message
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
        b'{"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "temperature": "1"}',
    ],
)
async def test_a_temperature_that_is_not_a_number_is_400(cluster: Cluster, body: bytes) -> None:
    # NaN is no JSON: the official client cannot send it, but other clients do
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as http:
        response = await http.post("/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"


async def test_a_body_that_is_not_json_is_400(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as http:
        response = await http.post("/chat/completions", content=b"{not json")
        unknown = await http.get("/no/such/path")
    assert response.status_code == 400 and response.json()["error"]["param"] is None
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_the_chat_template_refusing_a_role_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="roles are system, user and assistant"):
        await client.chat.completions.create(
            model="chat",
            messages=HELLO,
            extra_body={"messages": [{"role": "robot", "content": "hi"}]},
        )


async def test_a_model_on_the_wrong_endpoint(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as wrong:
        await client.chat.completions.create(model="embed", messages=HELLO)
    assert wrong.value.param == "model" and "/v1/chat/completions" in wrong.value.message
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="story", input="a graph embeds nothing")
    with pytest.raises(openai.NotFoundError, match="served as echo"):
        await client.completions.create(model="echo", prompt="not an llm")


async def test_a_shed_request_is_429(
    cluster: Cluster, client: openai.AsyncOpenAI, gates: dict[str, Gate]
) -> None:
    runner = cluster.held.registry.get("shed").runner
    held = asyncio.create_task(client.chat.completions.create(model="shed", messages=HELLO))
    await eventually(lambda: runner.queue_depth == 1, timeout=30)  # its one place is taken
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="shed", messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"
    gates["shed"].open()
    assert (await held).choices[0].message.content == "released"


async def test_no_replica_is_503(
    cluster: Cluster, client: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    opened = Gate(tmp_path / "open")
    opened.open()
    async with running_worker(
        [{"name": "lonely", "class": "tests.integration.test_gateway:HeldChat",
          "options": {"gate": str(opened)}}],
        etcd=cluster.llm.settings.etcd, worker_id="lonely",
    ) as lonely:  # fmt: skip
        assert await cluster.gateway.routed.wait_for_endpoints("lonely", timeout=30)
        async with controlplane(cluster) as plane:
            await plane.DrainWorker(cp.DrainWorkerRequest(worker_id=lonely.worker_id))
        await eventually(lambda: not cluster.gateway.routed.endpoints("lonely"), timeout=30)
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="lonely", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.code == "model_unavailable"


async def test_a_deadline_that_passes_is_504(cluster: Cluster, gates: dict[str, Gate]) -> None:
    impatient = Gateway(
        GatewaySettings(port=0, controlplanes=[cluster.plane.address], composer=None,
                        request_timeout=1.0)
    )  # fmt: skip
    await impatient.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=f"http://{impatient.address}/v1", api_key="unused", max_retries=0
        ) as client:
            # the gate stays shut: the call cannot be answered before its deadline
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="slow", messages=HELLO)
        assert caught.value.status_code == 504
    finally:
        gates["slow"].open()
        await impatient.stop()


# -- lifecycle -----------------------------------------------------------------------------


async def test_health_and_a_graceful_stop_that_finishes_the_request_in_flight(
    cluster: Cluster, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "answer")
    async with running_worker(
        [{"name": "parting", "class": "tests.integration.test_gateway:HeldChat",
          "options": {"gate": str(gate)}}],
        etcd=cluster.llm.settings.etcd, worker_id="parting",
    ) as parting:  # fmt: skip
        leaving = Gateway(GatewaySettings(port=0, controlplanes=[cluster.plane.address],
                                          composer=None, grace_seconds=30))  # fmt: skip
        await leaving.start()
        stopping: asyncio.Task[None] | None = None
        base = f"http://{leaving.address}"
        try:
            assert await leaving.routed.wait_for_endpoints("parting", timeout=30)
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                assert (await http.get("/health")).json() == {"status": "serving"}
                runner = parting.registry.get("parting").runner
                body = {"model": "parting", "messages": HELLO}
                asked = asyncio.create_task(http.post("/v1/chat/completions", json=body))
                await eventually(lambda: runner.queue_depth == 1, timeout=30)
                stopping = asyncio.create_task(leaving.stop())
                await eventually(lambda: not leaving.health.serving, timeout=30)
                assert not stopping.done()  # it waits for the request in flight ...
                gate.open()
                answered = await asyncio.wait_for(asked, 30)  # ... which is answered
                await asyncio.wait_for(stopping, 30)
            assert answered.status_code == 200
            assert answered.json()["choices"][0]["message"]["content"] == "released"
            with pytest.raises(httpx.ConnectError):  # and then it listens no more
                async with httpx.AsyncClient(base_url=base, timeout=5) as late:
                    await late.get("/health")
        finally:
            gate.open()
            await (stopping if stopping is not None else leaving.stop())


@contextlib.asynccontextmanager
async def controlplane(
    cluster: Cluster,
) -> AsyncIterator[controlplane_pb2_grpc.ControlPlaneAsyncStub]:
    async with grpc.aio.insecure_channel(cluster.plane.address) as channel:
        yield controlplane_pb2_grpc.ControlPlaneStub(channel)
