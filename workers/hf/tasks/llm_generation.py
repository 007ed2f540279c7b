"""What llm/v1/chat and llm/v1/completions share: checking a request, generating its n
choices (batched, or streamed as OpenAI-style chunks), and counting its tokens.

A subclass says how inputs become prompt tokens and how a choice and a chunk look.
Generation calls the model directly, as text-generation does (through `decoding.Decoder`,
generate's result without its per-call set-up; beam search through generate): prompts are padded
on the left so every row's new tokens start at the same column, each request's n choices
are n rows, and each row has its own token limit, stop sequences and finish reason
(`llm_choices`). Beam search keeps its rows in beams, not choices: it runs one request at
a time and its stop sequences are applied to the finished beams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from transformers import StoppingCriteriaList

from modelyard.errors import InvalidArgument
from modelyard.model import Outputs, Request
from workers.hf.tasks.base import Emit, Item, PushStreamingTask, freeze, max_input_tokens
from workers.hf.tasks.decoding import Decoder
from workers.hf.tasks.llm_choices import ChoiceText, ChoiceWatcher
from workers.hf.tasks.llm_params import DEFAULTS, PARAMETERS, check_generation, sampling
from workers.hf.tasks.llm_params import stop_sequences as parse_stop
from workers.hf.tasks.llm_responses import (
    COMPLETION_OUTPUTS,
    Envelope,
    checkpoint_name,
    usage,
)
from workers.hf.tasks.llm_sampling import request_generator, sampling_processors

# A model that states no context length gets at most this many new tokens by default.
_DEFAULT_MAX_TOKENS_WITHOUT_CONTEXT = 256
# Set per choice (each row has its own), so requests that differ only in these batch together.
_PER_CHOICE = ("max_tokens", "stop", "n", "seed", "stream")
# Passed to generate only when set: unset, the checkpoint's generation_config decides.
_PASSED_WHEN_SET = ("min_new_tokens", "no_repeat_ngram_size", "repetition_penalty")


class GenerationTask(PushStreamingTask):
    pipeline_task = "text-generation"
    outputs = COMPLETION_OUTPUTS
    parameters = PARAMETERS
    default_parameters = DEFAULTS
    #: The id's prefix, and the `object` of a response and of a stream's chunks.
    id_prefix: ClassVar[str]
    object_name: ClassVar[str]
    chunk_object: ClassVar[str]

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        if self.tokenizer.pad_token_id is None:
            # GPT-2 style tokenizers have no pad token; batches pad with eos (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._context = max_input_tokens(pipe)
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        self.model_name = checkpoint_name(pipe)
        self._decoder = Decoder(self.model)

    # -- what a subclass defines -------------------------------------------------------

    def prompt_ids(self, inputs: Mapping[str, Any]) -> list[int]:
        """The prompt's tokens; InvalidArgument when the inputs cannot make one."""
        raise NotImplementedError

    def choice(self, index: int, choice: ChoiceText) -> dict[str, Any]:
        """One finished choice of a response."""
        raise NotImplementedError

    def delta(self, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        """One choice of a chunk: new text, or (with a finish_reason) the choice's end."""
        raise NotImplementedError

    def opening(self, index: int) -> dict[str, Any] | None:
        """A choice's first chunk, sent before any text, if the format has one."""
        return None

    # -- per request -------------------------------------------------------------------

    def prepare(self, request: Request, *, streaming: bool = False) -> Item:
        item = super().prepare(request)
        params = item.params
        if params["stream"] and not streaming:
            raise InvalidArgument(
                "parameter 'stream' is true, but Predict answers once: call PredictStream "
                "for chunks"
            )
        if streaming and params["stream"] is not False and params["num_beams"] > 1:
            raise InvalidArgument(
                "parameter 'num_beams' above 1 cannot stream (beams are only ranked at the "
                "end): set num_beams to 1, or stream to false"
            )
        return item

    def check(self, item: Item) -> None:
        check_generation(item.params)
        ids = self.prompt_ids(item.inputs)
        item.prepared["ids"] = ids
        item.prepared["stops"] = parse_stop(item.params["stop"])
        item.prepared["limit"] = limit = self._token_limit(len(ids), item.params["max_tokens"])
        min_new = item.params["min_new_tokens"]
        if min_new is not None and min_new > limit:
            raise InvalidArgument(
                f"parameter 'min_new_tokens' ({min_new}) is more than the {limit} tokens this "
                "prompt leaves room for"
            )

    def group_key(self, item: Item) -> Hashable:
        if item.params["num_beams"] > 1:
            return ("alone", id(item))
        return freeze({k: v for k, v in item.params.items() if k not in _PER_CHOICE})

    # -- generation --------------------------------------------------------------------

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        if items[0].params["num_beams"] > 1:
            [item] = items  # beam search groups hold one request (group_key)
            return [self._response(item, self._beam_search(item), self._envelope())]
        choices = [self._choices(item) for item in items]
        self._generate(items, [c for per_item in choices for c in per_item])
        return [
            self._response(item, per_item, self._envelope())
            for item, per_item in zip(items, choices, strict=True)
        ]

    def push(self, request: Request, emit: Emit, *stops: threading.Event) -> Outputs:
        """Sends chunks (one choice each) as text settles; returns the whole response."""
        item = self.prepare(request, streaming=True)
        if item.params["stream"] is False:
            return self.run_group([item])[0]
        envelope = self._envelope()
        choices = self._choices(item)
        finished = [False] * len(choices)

        def send(choice: dict[str, Any]) -> None:
            emit({**envelope.fields(self.chunk_object), "choices": [choice]})

        def send_new_text() -> None:  # on the generation thread, after every token
            for index, choice in enumerate(choices):
                if piece := choice.take():
                    send(self.delta(index, piece, None))
                if choice.finished and not finished[index]:
                    finished[index] = True
                    send(self.delta(index, "", choice.finish_reason))

        for index in range(len(choices)):
            if (opening := self.opening(index)) is not None:
                send(opening)
        self._generate([item], choices, cancelled=stops, on_step=send_new_text)
        send_new_text()  # the choices that ran out of tokens end now
        return self._response(item, choices, envelope)

    def _envelope(self) -> Envelope:
        return Envelope.new(self.id_prefix, self.model_name)

    def _choices(self, item: Item) -> list[ChoiceText]:
        stops, limit = item.prepared["stops"], item.prepared["limit"]
        return [
            ChoiceText(self.tokenizer, stops, self._eos_ids, limit) for _ in range(item.params["n"])
        ]

    def _generate(
        self,
        items: Sequence[Item],
        choices: Sequence[ChoiceText],
        *,
        cancelled: Sequence[threading.Event] = (),
        on_step: Callable[[], None] | None = None,
    ) -> None:
        """One generate call for every choice of `items` (n rows per item, in order)."""
        rows = [item.prepared["ids"] for item in items for _ in range(item.params["n"])]
        input_ids, attention_mask = self._left_padded(rows)
        params = items[0].params  # a group shares everything but _PER_CHOICE
        kwargs = self._decoding_kwargs(params)
        if sampling(params):
            draws = [
                (request_generator(item.params["seed"], self.model.device), item.params["n"])
                for item in items
            ]
            kwargs["logits_processor"] = sampling_processors(params, draws)
        self._decoder.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max(item.prepared["limit"] for item in items),
            # greedy in transformers' eyes: sampling is SeededSampler's draw
            do_sample=False,
            num_beams=1,
            stopping_criteria=StoppingCriteriaList([ChoiceWatcher(choices, cancelled, on_step)]),
            **kwargs,
        )
        for choice in choices:
            choice.end()

    def _beam_search(self, item: Item) -> list[ChoiceText]:
        """The n best beams, each cut at its first stop sequence or end-of-text token."""
        input_ids, attention_mask = self._left_padded([item.prepared["ids"]])
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=item.prepared["limit"],
            do_sample=False,
            num_beams=item.params["num_beams"],
            num_return_sequences=item.params["n"],
            **self._decoding_kwargs(item.params),
        )
        choices = self._choices(item)
        for choice, row in zip(choices, output[:, input_ids.shape[1] :].tolist(), strict=True):
            for token in row:
                if choice.add(token):
                    break
            choice.end()
        return choices

    def _decoding_kwargs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {name: params[name] for name in _PASSED_WHEN_SET if params[name] is not None}
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        return kwargs

    def _response(self, item: Item, choices: Sequence[ChoiceText], envelope: Envelope) -> Outputs:
        return {
            **envelope.fields(self.object_name),
            "choices": [self.choice(index, choice) for index, choice in enumerate(choices)],
            "usage": usage(len(item.prepared["ids"]), choices),
        }

    def _token_limit(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The most tokens a choice may have: max_tokens, within what the context leaves."""
        if self._context is None:
            return max_tokens or _DEFAULT_MAX_TOKENS_WITHOUT_CONTEXT
        room = self._context - prompt_tokens
        if max_tokens is None:
            if room < 1:
                raise InvalidArgument(
                    f"the prompt is {prompt_tokens} tokens, which fills this model's context "
                    f"of {self._context} tokens: shorten the input"
                )
            return room
        if max_tokens > room:
            raise InvalidArgument(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is more "
                f"than this model's context of {self._context} tokens: shorten the input or "
                "lower max_tokens"
            )
        return max_tokens

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(row)) + row for row in rows]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
        device = self.model.device
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token that ends a choice: the generation config's (one id or several, as
    Llama 3's chat models have) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return frozenset(i for i in [*ids, tokenizer.eos_token_id] if i is not None)
