"""The request bodies of /v1/chat/completions, /v1/completions and /v1/embeddings, checked
before any model is called: a mistake is a 400 whose `param` names the field
("temperature", "messages[0].role"), as OpenAI's API answers.

Types are strict (a quoted number is not a number; true is not 1), numbers finite, and a
field this server does not know is refused, as OpenAI refuses one it does not know. Fields
OpenAI defines that change nothing here are accepted and ignored (`user`, `metadata`,
...); those that would change the answer in a way this server cannot give (tools,
logprobs, penalties, ...) are refused unless they hold their do-nothing value.

Ranges the worker's tasks own (how many stop sequences, the largest n, num_beams) are left
to the worker, whose INVALID_ARGUMENT names the field too: one rule, one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ApiError, bad_request

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request, the worker's too

# Accepted and ignored: they describe the caller or ask for storage, not for an answer.
_IGNORED_CHAT = frozenset(
    ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "safety_identifier",
     "prompt_cache_key")
)  # fmt: skip
_IGNORED = frozenset({"user"})
_NOTHING = (None, 0)  # a number or a flag that is off (False == 0)
# Refused unless they hold one of these values (what asking for nothing looks like).
_UNSUPPORTED_CHAT: Mapping[str, tuple[Any, ...]] = {
    "presence_penalty": _NOTHING,
    "frequency_penalty": _NOTHING,
    "logprobs": _NOTHING,
    "top_logprobs": _NOTHING,
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
_UNSUPPORTED_COMPLETIONS: Mapping[str, tuple[Any, ...]] = {
    "presence_penalty": _NOTHING,
    "frequency_penalty": _NOTHING,
    "logprobs": _NOTHING,
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "echo": (None, False),
    "best_of": (None, 1),
}
_UNSUPPORTED_EMBEDDINGS: Mapping[str, tuple[Any, ...]] = {"dimensions": (None,)}


# the llm/v1 task parameters a request passes on as it gives them
_PASSED = ("temperature", "top_p", "top_k", "n", "stop", "seed", "min_new_tokens", "num_beams",
           "no_repeat_ngram_size", "repetition_penalty")  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChatMessage(_Strict):
    role: str = Field(min_length=1)
    content: str
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """A string, or OpenAI's list of text parts (joined by newlines)."""
        if isinstance(value, list) and all(_is_text_part(part) for part in value):
            return "\n".join(part["text"] for part in value)
        if not isinstance(value, str):
            raise ValueError(
                "must be a string, or a list of text parts ({'type': 'text', 'text': ...}); "
                "images, audio and files are not supported"
            )
        return value


class StreamOptions(_Strict):
    include_usage: bool | None = None


class _Generation(_Strict):
    """What chat and completions share: the model, and the llm/v1 generation parameters
    (OpenAI's, and the transformers arguments the worker's tasks take besides)."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    min_new_tokens: int | None = Field(None, ge=0)
    num_beams: int | None = Field(None, ge=1)
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(s, str) for s in value):
            return value
        raise ValueError("must be a string or a list of strings")

    @property
    def streams(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def parameters(self) -> dict[str, Any]:
        """The llm/v1 task parameters this request sets (unset ones keep the model's
        defaults). `stream` is not one: it picks Predict or PredictStream."""
        chosen = {name: getattr(self, name) for name in _PASSED}
        chosen["max_tokens"] = self.token_limit()
        return {name: value for name, value in chosen.items() if value is not None}

    def token_limit(self) -> int | None:
        return self.max_tokens


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer max_tokens

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def message_values(self) -> list[dict[str, str]]:
        """The llm/v1/chat `messages` input: role, content and (when set) name."""
        return [message.model_dump(exclude_none=True) for message in self.messages]


class CompletionRequest(_Generation):
    prompt: str

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        if not isinstance(value, str):
            raise ValueError(
                "must be a string (or a list of one string): token arrays and several "
                "prompts per request are not supported"
            )
        return value


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1)
    input: list[str]
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if (
            not isinstance(texts, list)
            or not 0 < len(texts) <= MAX_EMBEDDING_INPUTS
            or not all(isinstance(text, str) for text in texts)
        ):
            raise ValueError(
                f"must be a string or a list of 1 to {MAX_EMBEDDING_INPUTS} strings (token "
                "arrays are not supported)"
            )
        return texts


Parsed = TypeVar("Parsed", ChatRequest, CompletionRequest, EmbeddingRequest)

_SCREENS: dict[type[BaseModel], tuple[frozenset[str], Mapping[str, tuple[Any, ...]]]] = {
    ChatRequest: (_IGNORED_CHAT, _UNSUPPORTED_CHAT),
    CompletionRequest: (_IGNORED, _UNSUPPORTED_COMPLETIONS),
    EmbeddingRequest: (_IGNORED, _UNSUPPORTED_EMBEDDINGS),
}


def parse(kind: type[Parsed], body: Any) -> Parsed:
    """The checked request; ApiError 400 naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", None)
    ignored, unsupported = _SCREENS[kind]
    for name, allowed in unsupported.items():
        if name in body and body[name] not in allowed:
            raise bad_request(
                f"'{name}' is not supported by this server; leave it out.",
                name,
                code="unsupported_parameter",
            )
    fields = {k: v for k, v in body.items() if k not in ignored and k not in unsupported}
    try:
        parsed = kind.model_validate(fields)
    except ValidationError as error:
        raise invalid(error) from None
    if isinstance(parsed, ChatRequest):
        _one_token_limit(parsed)
    return parsed


def invalid(error: ValidationError) -> ApiError:
    """The first problem pydantic found, worded as OpenAI words it."""
    problem = error.errors(include_url=False)[0]
    param = _param(problem["loc"])
    kind = problem["type"]
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param)
    if kind == "extra_forbidden":
        return bad_request(
            f"Unrecognized request argument supplied: {param}", param, code="unknown_parameter"
        )
    message = str(problem["msg"]).removeprefix("Value error, ")
    given = problem.get("input")
    if isinstance(given, int | float) and not isinstance(given, bool):
        message += f", got {given!r}"  # a number: short, and it says what was wrong
    return bad_request(f"Invalid value for '{param}': {message}.", param)


def _param(loc: tuple[int | str, ...]) -> str:
    """("messages", 0, "role") -> "messages[0].role"."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _one_token_limit(request: ChatRequest) -> None:
    both = request.max_tokens is not None and request.max_completion_tokens is not None
    if both and request.max_tokens != request.max_completion_tokens:
        raise bad_request(
            "Set max_completion_tokens or max_tokens (its older name), not both.",
            "max_tokens",
        )


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and set(part) == {"type", "text"}
        and part["type"] == "text"
        and isinstance(part["text"], str)
    )
