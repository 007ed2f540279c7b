"""text-generation: continue a prompt with a causal language model, batched or streamed.

Generation calls the model directly instead of the pipeline: the pipeline cannot stream, and
batching needs prompts padded on the left (the new tokens of every row must start at the same
column), which is done here whatever the tokenizer's padding side. It decodes through
`decoding.Decoder`, generate's result without its per-call set-up.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from modelyard.errors import InvalidArgument
from modelyard.model import Outputs, Request
from modelyard.signature import Field
from workers.hf.tasks.base import (
    Emit,
    Item,
    PushStreamingTask,
    max_input_tokens,
    require_positive,
)
from workers.hf.tasks.decoding import Decoder
from workers.hf.tasks.text_streaming import IncrementalTextStreamer

_SAMPLING = ("temperature", "top_k", "top_p")
#: A chunk costs the worker 0.2-0.5 ms of CPU (a message, and its event loop woken and the
#: GIL passed back and forth), a fifth of a tiny model's decoding step: a model faster than a
#: token this often sends a few tokens a chunk (bench/README.md, "streaming").
STREAM_INTERVAL_MS = 20.0


class _StopWhenSet(StoppingCriteria):
    """Ends generation at the next token once any of the events is set."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = any(event.is_set() for event in self._events)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class TextGeneration(PushStreamingTask):
    task = "text-generation"
    pipeline_task = "text-generation"
    inputs = (Field("text", "string", "The prompt."),)
    outputs = (Field("text", "string", "The generated text (after the prompt, by default)."),)
    parameters = (
        Field("max_new_tokens", "int", "Most tokens to generate.", required=False),
        Field("do_sample", "bool", "Sample instead of greedy decoding.", required=False),
        Field("temperature", "float", "Sampling temperature (with do_sample).", required=False),
        Field("top_k", "int", "Sample among the k likeliest tokens.", required=False),
        Field("top_p", "float", "Nucleus sampling mass (with do_sample).", required=False),
        Field("repetition_penalty", "float", "Above 1 discourages repeats.", required=False),
        Field(
            "return_full_text",
            "bool",
            "Return the prompt followed by the generated text.",
            required=False,
        ),
        Field(
            "stream_interval_ms",
            "float",
            "PredictStream: the least time between two chunks (the first word goes at once); "
            "faster tokens are sent together. 0: every word as soon as it is complete.",
            required=False,
        ),
    )
    default_parameters = {
        "max_new_tokens": 32,
        "do_sample": False,
        "temperature": None,
        "top_k": None,
        "top_p": None,
        "repetition_penalty": None,
        "return_full_text": False,
        "stream_interval_ms": STREAM_INTERVAL_MS,
    }

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        if self.tokenizer.pad_token_id is None:
            # GPT-2 style tokenizers have no pad token; batches pad with eos (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._context = max_input_tokens(pipe)
        self._decoder = Decoder(self.model)

    def check(self, item: Item) -> None:
        params = item.params
        require_positive(params, "max_new_tokens", "temperature", "top_p", "repetition_penalty")
        if params["top_p"] is not None and params["top_p"] > 1:
            raise InvalidArgument(f"parameter 'top_p' must be at most 1, got {params['top_p']}")
        interval = params["stream_interval_ms"]
        if interval is not None and interval < 0:
            raise InvalidArgument(
                f"parameter 'stream_interval_ms' must be 0 or more, got {interval}"
            )
        if params["top_k"] is not None and params["top_k"] < 0:
            raise InvalidArgument(f"parameter 'top_k' must be 0 or more, got {params['top_k']}")
        # tokenized once, here: the model call reuses the ids
        item.prepared["ids"] = self._prompt_ids(item.inputs["text"])
        if self._context is not None:
            length = len(item.prepared["ids"]) + params["max_new_tokens"]
            if length > self._context:
                raise InvalidArgument(
                    f"the prompt plus max_new_tokens is {length} tokens; this model's context "
                    f"holds {self._context}: shorten input 'text' or lower max_new_tokens"
                )

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        prompts = [item.inputs["text"] for item in items]
        input_ids, attention_mask = self._left_padded([item.prepared["ids"] for item in items])
        output = self._decoder.generate(
            input_ids=input_ids, attention_mask=attention_mask, **self._generate_kwargs(items[0])
        )
        new_tokens = output[:, input_ids.shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        full = items[0].params["return_full_text"]
        return [{"text": (p + t) if full else t} for p, t in zip(prompts, texts, strict=True)]

    def push(self, request: Request, emit: Emit, *stops: threading.Event) -> Outputs:
        """Sends {"text": piece} as words complete (at most one a `stream_interval_ms`);
        returns the whole text."""
        item = self.prepare(request)
        prompt = item.inputs["text"]
        full = item.params["return_full_text"]
        input_ids, attention_mask = self._left_padded([item.prepared["ids"]])
        if full and prompt:
            emit({"text": prompt})  # so the chunks still add up to the final text
        output = self._decoder.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            streamer=IncrementalTextStreamer(
                self.tokenizer,
                lambda piece: emit({"text": piece}),
                interval=(item.params["stream_interval_ms"] or 0.0) / 1000.0,
            ),
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(*stops)]),
            **self._generate_kwargs(item),
        )
        text = self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
        return {"text": prompt + text if full else text}

    def _prompt_ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]  # an empty prompt: generate from the start
        if not ids:
            raise InvalidArgument("input 'text' must not be empty for this model")
        return ids

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(row)) + row for row in rows]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
        device = self.model.device
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def _generate_kwargs(self, item: Item) -> dict[str, Any]:
        params = item.params
        kwargs: dict[str, Any] = {
            "max_new_tokens": params["max_new_tokens"],
            "do_sample": params["do_sample"],
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params["repetition_penalty"] is not None:
            kwargs["repetition_penalty"] = params["repetition_penalty"]
        if params["do_sample"]:
            # only with sampling: greedy decoding ignores them and transformers warns
            kwargs.update({k: params[k] for k in _SAMPLING if params[k] is not None})
        return kwargs
