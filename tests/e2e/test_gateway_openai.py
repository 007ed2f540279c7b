"""The official `openai` client, sync and async, against `modelyard gateway` in the local
stack (`modelyard_cli.stack`, as `modelyard up` runs it): a real etcd, a control plane, a
worker process serving tiny-gpt2-chat as llm/v1/chat, the tiny GPT-2 as
llm/v1/completions and the real all-MiniLM-L6-v2 as llm/v1/embeddings, a composer with a
deployed text-output graph, and the gateway started after it, each its own process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest
import pytest_asyncio
import yaml
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console

from modelyard_cli.graph_output import deploy_files
from modelyard_cli.stack import GATEWAY, Phase, Stack

# The module's stack starts in its first test's setup, which that test's timeout covers:
# on two busy cores the start alone can take most of the default 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
ONCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Once upon a time"}]
# a graph callable as a model: one string input, a `text` output (streamed: `each` reads
# gen's chunks, so the composer streams gen)
STORY = {
    "name": "story",
    "description": "The tiny GPT-2 continues a prompt.",
    "inputs": {"prompt": "string"},
    "nodes": [
        {"name": "gen", "model": "complete", "inputs": {"prompt": "inputs.prompt"},
         "parameters": {"max_tokens": 8}},
        {"name": "each", "model": "echo", "inputs": {"text": "gen.choices.0.text"},
         "stream": "chunk"},
    ],
    "outputs": {"text": "gen.choices.0.text"},
}  # fmt: skip


class Phases:
    """The stack's phase changes, to read how each service ended."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Phase, str]] = []

    def changed(self, service: str, phase: Phase, detail: str) -> None:
        self.seen.append((service, phase, detail))


@pytest.fixture(scope="module")
def phases() -> Phases:
    return Phases()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoints: dict[str, Path],
    minilm_path: Path,
    phases: Phases,
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("gateway-stack")
    (folder / "story.yaml").write_text(yaml.safe_dump(STORY, sort_keys=False))
    models = [
        {"name": "chat", "source": str(tiny_checkpoints["tiny-gpt2-chat"]), "task": "llm/v1/chat",
         "parameters": {"max_tokens": 8}, "batching": {"max_batch_size": 4, "max_wait_ms": 2}},
        {"name": "complete", "source": str(tiny_checkpoints["tiny-gpt2"]),
         "task": "llm/v1/completions"},
        {"name": "embed", "source": str(minilm_path), "task": "llm/v1/embeddings"},
        {"name": "echo", "class": "tests.support.models:Echo"},
    ]  # fmt: skip
    stack_file = folder / "stack.yaml"
    spec = {"workers": [{"worker_id": "llm", "models": models}], "graphs": ["story.yaml"]}
    stack_file.write_text(yaml.safe_dump(spec))
    running = Stack(stack_file, work_dir=folder / "state", observer=phases)
    try:
        running.start()
        deploy_files(running.composer, running.graph_files(), Console(quiet=True))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def sync_client(stack: Stack) -> Iterator[openai.OpenAI]:
    base_url = f"http://{stack.gateway}/v1"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest_asyncio.fixture
async def async_client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = f"http://{stack.gateway}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_the_gateway_starts_after_the_composer(stack: Stack) -> None:
    assert stack.services()[-2:] == ["composer", GATEWAY]
    assert stack.gateway.startswith("127.0.0.1:")


def test_the_models_are_the_llm_models_and_the_graph(sync_client: openai.OpenAI) -> None:
    listed = sorted(model.id for model in sync_client.models.list())
    assert listed == ["chat", "complete", "embed", "story"]  # echo is no OpenAI model


def test_sync_chat_and_its_stream_agree(sync_client: openai.OpenAI) -> None:
    unary = sync_client.chat.completions.create(model="chat", messages=HELLO)
    assert unary.model == "chat" and unary.choices[0].finish_reason == "length"
    assert unary.usage is not None and unary.usage.completion_tokens == 8  # the model_config
    stream = sync_client.chat.completions.create(model="chat", messages=HELLO, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == unary.choices[0].message.content


def test_sync_completions_and_embeddings(sync_client: openai.OpenAI) -> None:
    completion = sync_client.completions.create(model="complete", prompt="The cat", max_tokens=5)
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell."]
    vectors = [d.embedding for d in sync_client.embeddings.create(model="embed", input=texts).data]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))  # MiniLM's vectors have length 1

    # the real MiniLM: the two sentences about music are closer than music and stocks
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


async def test_async_chat_streams_and_a_graph_is_a_model(async_client: openai.AsyncOpenAI) -> None:
    unary = await async_client.chat.completions.create(model="chat", messages=HELLO)
    stream = await async_client.chat.completions.create(model="chat", messages=HELLO, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == unary.choices[0].message.content
    told = await async_client.completions.create(model="story", prompt="Once upon a time")
    chatted = await async_client.chat.completions.create(model="story", messages=ONCE)
    assert told.model == "story" and chatted.choices[0].message.content == told.choices[0].text
    streamed = await async_client.chat.completions.create(model="story", messages=ONCE, stream=True)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in streamed]
    assert "".join(pieces) == told.choices[0].text and len(pieces) > 3


async def test_error_bodies(async_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        await async_client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as hot:
        await async_client.chat.completions.create(model="chat", messages=HELLO, temperature=9)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as roleless:
        await async_client.chat.completions.create(
            model="chat", messages=HELLO, extra_body={"messages": [{"content": "hi"}]}
        )
    assert roleless.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as wrong:
        await async_client.embeddings.create(model="chat", input="chat embeds nothing")
    assert wrong.value.param == "model"


def test_the_gateway_stops_cleanly_with_the_stack(stack: Stack, phases: Phases) -> None:
    stack.stop()
    ended = [detail for service, phase, detail in phases.seen
             if service == GATEWAY and phase is Phase.STOPPED]  # fmt: skip
    assert ended == ["stopped"]  # SIGTERM, exit code 0
