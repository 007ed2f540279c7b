"""The llm/v1 tasks through a real worker's gRPC API: metadata, model_config defaults
(the config's `parameters:`) that a request overrides, unary and streamed chat, errors as
statuses, and embeddings on the real MiniLM."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from modelyard.client import AsyncClient
from modelyard.errors import InvalidArgument
from modelyard.values import from_value_map
from tests.integration.conftest import running_worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

HELLO = [{"role": "user", "content": "Hello there"}]
# MLflow's model_config: defaults every request gets unless it sets its own
MODEL_CONFIG = {"max_tokens": 6, "no_repeat_ngram_size": 1}


@pytest.fixture(scope="module")
def models(tiny_checkpoints: dict[str, Path], minilm_path: Path) -> list[dict[str, Any]]:
    gpt2, chat_gpt2 = str(tiny_checkpoints["tiny-gpt2"]), str(tiny_checkpoints["tiny-gpt2-chat"])
    return [
        {
            "name": "chat",
            "source": chat_gpt2,
            "task": "llm/v1/chat",
            "parameters": MODEL_CONFIG,
            "batching": {"max_batch_size": 4, "max_wait_ms": 5},
        },
        {"name": "complete", "source": gpt2, "task": "llm/v1/completions"},
        {"name": "no-template", "source": gpt2, "task": "llm/v1/chat"},
        {"name": "embed", "source": str(minilm_path), "task": "llm/v1/embeddings"},
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(models: list[dict[str, Any]]) -> AsyncIterator[AsyncClient]:
    async with (
        running_worker(models, strict=True) as worker,
        AsyncClient(worker.address, timeout=60) as client,
    ):
        yield client


async def test_metadata_reports_the_llm_task_and_its_signature(client: AsyncClient) -> None:
    metadata = await client.metadata("chat")
    assert metadata.task == "llm/v1/chat"
    assert metadata.streaming is True
    assert [f.name for f in metadata.inputs] == ["messages"]
    assert [f.name for f in metadata.outputs] == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
    ]
    assert {"temperature", "top_p", "max_tokens", "stop", "n", "stream", "seed"} <= {
        f.name for f in metadata.parameters
    }
    defaults = from_value_map(metadata.default_parameters)
    assert defaults["max_tokens"] == 6 and defaults["no_repeat_ngram_size"] == 1
    assert (await client.metadata("embed")).task == "llm/v1/embeddings"


async def test_model_config_sets_defaults_a_request_overrides(client: AsyncClient) -> None:
    configured = (await client.predict("chat", messages=HELLO)).outputs
    assert configured["usage"]["completion_tokens"] == 6
    assert configured["choices"][0]["finish_reason"] == "length"
    asked = (await client.predict("chat", messages=HELLO, parameters={"max_tokens": 2})).outputs
    assert asked["usage"]["completion_tokens"] == 2
    # the override changed only max_tokens: the configured no_repeat_ngram_size still held
    assert configured["choices"][0]["message"]["content"].startswith(
        asked["choices"][0]["message"]["content"]
    )


async def test_a_stream_adds_up_to_the_unary_answer(client: AsyncClient) -> None:
    unary = (await client.predict("chat", messages=HELLO)).outputs
    pieces: list[str] = []
    final: dict[str, Any] = {}
    last_finish = None
    async for event in client.predict_stream("chat", messages=HELLO):
        if event.final:
            final = event.outputs
            continue
        assert event.outputs["object"] == "chat.completion.chunk"
        [choice] = event.outputs["choices"]
        pieces.append(choice["delta"].get("content", ""))
        last_finish = choice["finish_reason"]
    assert last_finish == "length"
    assert "".join(pieces) == unary["choices"][0]["message"]["content"]
    assert final["choices"] == unary["choices"] and final["usage"] == unary["usage"]


async def test_concurrent_requests_batch_without_mixing_answers(client: AsyncClient) -> None:
    limits = [1, 3, 5, 6]
    alone = [
        (await client.predict("chat", messages=HELLO, parameters={"max_tokens": n})).outputs
        for n in limits
    ]
    together = await asyncio.gather(
        *(client.predict("chat", messages=HELLO, parameters={"max_tokens": n}) for n in limits)
    )
    for one, batched in zip(alone, together, strict=True):
        assert batched.outputs["choices"] == one["choices"]


@pytest.mark.parametrize(
    ("model", "inputs", "parameters", "expected"),
    [
        ("no-template", {"messages": HELLO}, {}, "model 'tiny-gpt2' has no chat template"),
        ("chat", {"messages": HELLO}, {"temperature": math.nan}, "'temperature'"),
        ("chat", {"messages": HELLO}, {"max_tokens": -1}, "'max_tokens'"),
        ("chat", {"messages": HELLO}, {"n": 0}, "'n'"),
        ("chat", {"messages": HELLO}, {"top_p": 1.5}, "'top_p'"),
        ("chat", {"messages": [{"role": "user"}]}, {}, r"messages\[0\]"),
        ("complete", {"prompt": "Hi"}, {"stream": True}, "PredictStream"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    client: AsyncClient,
    model: str,
    inputs: dict[str, Any],
    parameters: dict[str, Any],
    expected: str,
) -> None:
    with pytest.raises(InvalidArgument, match=expected):
        await client.predict(model, inputs, parameters=parameters)


async def test_completions_with_stop_and_n(client: AsyncClient) -> None:
    sampled = {"temperature": 1.0, "seed": 3, "max_tokens": 5, "n": 2}
    result = (await client.predict("complete", prompt="The cat", parameters=sampled)).outputs
    assert result["object"] == "text_completion"
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert result["usage"]["completion_tokens"] == 10
    first = result["choices"][0]["text"]
    stop = first.split()[1]
    stopped = (
        await client.predict("complete", prompt="The cat", parameters={**sampled, "stop": stop})
    ).outputs
    assert stopped["choices"][0] == {
        "index": 0,
        "text": first[: first.index(stop)],
        "finish_reason": "stop",
    }


async def test_embeddings_of_a_list(client: AsyncClient) -> None:
    texts = ["A man is playing a guitar.", "Someone plays an instrument."]
    result = (await client.predict("embed", input=texts)).outputs
    assert result["object"] == "list"
    assert [d["index"] for d in result["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 384 for d in result["data"])
    assert result["usage"]["prompt_tokens"] == result["usage"]["total_tokens"] > 0
