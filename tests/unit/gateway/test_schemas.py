"""Request bodies checked before any model is called: every mistake is a 400 naming its
field in OpenAI's words, and a checked request becomes the llm/v1 task's values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, parse

HELLO = [{"role": "user", "content": "Hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": HELLO, **fields}


def refusal(kind: type[Any], body: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(kind, body)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"messages": HELLO}, "model", "Missing required parameter: 'model'."),
        (chat(temperature=math.nan), "temperature", "finite number"),
        (chat(temperature=2.5), "temperature", "less than or equal to 2, got 2.5"),
        (chat(temperature="1"), "temperature", "valid number"),
        (chat(max_tokens=-3), "max_tokens", "greater than or equal to 1, got -3"),
        (chat(n=0), "n", "greater than or equal to 1"),
        (chat(n=True), "n", "valid integer"),  # JSON's true is not 1
        (chat(messages=[]), "messages", "at least 1"),
        (chat(messages=[{"role": "user"}]), "messages[0].content", "Missing"),
        (chat(messages=[{"role": "", "content": "x"}]), "messages[0].role", "at least 1"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
         "messages[0].content", "images, audio and files are not supported"),
        (chat(stop=3), "stop", "a string or a list of strings"),
        (chat(stream_options={"include_usage": True, "x": 1}), "stream_options.x",
         "Unrecognized request argument supplied: stream_options.x"),
        (chat(wat=1), "wat", "Unrecognized request argument supplied: wat"),
        (chat(logprobs=True), "logprobs", "not supported"),
        (chat(presence_penalty=0.5), "presence_penalty", "not supported"),
        (chat(response_format={"type": "json_object"}), "response_format", "not supported"),
        (chat(max_tokens=5, max_completion_tokens=6), "max_tokens", "not both"),
    ],
)  # fmt: skip
def test_a_bad_chat_request_names_its_field(body: Any, param: str, message: str) -> None:
    error = refusal(ChatRequest, body)
    assert error.param == param
    assert message in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_a_body_that_is_not_an_object() -> None:
    assert refusal(ChatRequest, [1, 2]).param is None


def test_what_asks_for_nothing_or_describes_the_caller_is_accepted() -> None:
    request = parse(
        ChatRequest,
        chat(user="me", metadata={"a": "b"}, logprobs=False, presence_penalty=0, tools=[],
             response_format={"type": "text"}, parallel_tool_calls=True),
    )  # fmt: skip
    assert request.parameters() == {}


def test_a_chat_request_becomes_the_tasks_inputs_and_parameters() -> None:
    request = parse(
        ChatRequest,
        chat(messages=[{"role": "user", "name": "ann", "content": [{"type": "text", "text": "a"},
                                                                   {"type": "text", "text": "b"}]}],
             temperature=1, max_completion_tokens=7, stop="\n", seed=3, top_k=5, stream=True,
             stream_options={"include_usage": True}),
    )  # fmt: skip
    assert request.message_values() == [{"role": "user", "content": "a\nb", "name": "ann"}]
    assert request.parameters() == {
        "temperature": 1.0, "max_tokens": 7, "stop": "\n", "seed": 3, "top_k": 5,
    }  # fmt: skip
    assert request.streams and request.include_usage


def test_completions_take_one_prompt() -> None:
    assert parse(CompletionRequest, {"model": "m", "prompt": ["once"]}).prompt == "once"
    assert refusal(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"
    assert refusal(CompletionRequest, {"model": "m", "prompt": [1, 2]}).param == "prompt"
    assert refusal(CompletionRequest, {"model": "m", "prompt": "x", "echo": True}).param == "echo"


def test_embeddings_take_texts() -> None:
    request = parse(EmbeddingRequest, {"model": "e", "input": "one", "encoding_format": "base64"})
    assert request.input == ["one"] and request.encoding_format == "base64"
    assert refusal(EmbeddingRequest, {"model": "e", "input": [[1, 2]]}).param == "input"
    assert refusal(EmbeddingRequest, {"model": "e", "input": []}).param == "input"
    assert refusal(EmbeddingRequest, {"model": "e", "input": "x", "dimensions": 8}).param == (
        "dimensions"
    )
    wrong = refusal(EmbeddingRequest, {"model": "e", "input": "x", "encoding_format": "hex"})
    assert wrong.param == "encoding_format"
