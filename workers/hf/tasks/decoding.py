"""`generate()` for the common case, without what generate spends before and between its steps.

`model.generate` resolves its generation config afresh on every call (a deep copy, merged
with the checkpoint's and the global defaults, then validated), inspects the forward's
signature, and every step rebuilds the model's inputs through `prepare_inputs_for_generation`
and `_update_model_kwargs_for_generation`. For a small model that is most of the time: a
16-token greedy generation of the tiny GPT-2 took 23.1 ms through generate and 15.0 ms as a
bare loop, a single token 2.6 ms against 1.2 (bench/README.md, "Decoding"). A time to first
token of one forward pass needs the set-up gone.

`Decoder.generate` takes generate's arguments and gives its result. The parts that decide
which tokens come out are transformers' own, resolved once per distinct set of generation
arguments: the merged generation config (`_prepare_generation_config`), its special tokens,
then per call the logits processors and stopping criteria generate would build, with the
caller's own merged in. What it does itself is what generate's decoding loop does for a
decoder-only model with the default dynamic cache: position ids from the attention mask,
the mask dropped when nothing is padded, one logit kept a step, argmax or a multinomial draw
over the softmax, finished rows filled with the pad token, the streamer fed the prompt and
then each step's tokens. The tests compare it token for token with generate (greedy, seeded
sampling, a repetition penalty, padded batches, EOS, GPT-2 and Llama).

Anything else goes to `model.generate` unchanged: beams, assisted or contrastive decoding,
several sequences per prompt, static or quantized caches, chunked prefill, time limits,
stop strings, encoder-decoder models, models with their own input preparation or cache
(Mamba and the like), remote code; and any set of arguments whose resolution fails, which
generate then reports itself. The transformers pin (5.23.*) is what the private methods
used here are checked against.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
from collections.abc import Hashable
from typing import Any

import torch
from transformers import DynamicCache, GenerationMixin, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.configuration_utils import GenerationConfig, GenerationMode

from workers.hf.tasks.base import freeze

log = logging.getLogger(__name__)

_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
#: distinct argument sets whose resolved config is kept (each is a few KB)
_MAX_PLANS = 256


class Decoder:
    """`generate` for one causal language model; see the module's docstring."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._eligible = _model_eligible(model)
        forward = inspect.signature(model.forward).parameters
        self._position_ids = "position_ids" in forward
        self._logits_to_keep = "logits_to_keep" in forward
        self._plans: dict[Hashable, GenerationConfig | None] = {}
        self._lock = threading.Lock()

    @property
    def eligible(self) -> bool:
        """Whether this model's architecture decodes here at all (else always generate)."""
        return self._eligible

    def generate(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        streamer: Any = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        logits_processor: LogitsProcessorList | None = None,
        **generation_kwargs: Any,
    ) -> torch.Tensor:
        """What `model.generate(...)` with these arguments returns: the prompt's ids
        followed by the new ones, one row per prompt."""
        config = self.plan(generation_kwargs)
        if config is None:
            return self.model.generate(  # type: ignore[no-any-return]
                input_ids=input_ids,
                attention_mask=attention_mask,
                streamer=streamer,
                stopping_criteria=stopping_criteria,
                logits_processor=logits_processor,
                **generation_kwargs,
            )
        return self._decode(
            config,
            input_ids,
            attention_mask,
            streamer,
            stopping_criteria or StoppingCriteriaList(),
            logits_processor or LogitsProcessorList(),
        )

    def plan(self, generation_kwargs: dict[str, Any]) -> GenerationConfig | None:
        """The resolved generation config for these arguments, or None when this loop does
        not reproduce what generate would do with them."""
        if not self._eligible:
            return None
        key = freeze(generation_kwargs)
        with self._lock:
            if key in self._plans:
                return self._plans[key]
        config = self._resolve(generation_kwargs)
        with self._lock:
            if len(self._plans) < _MAX_PLANS:
                self._plans[key] = config
        return config

    def _resolve(self, generation_kwargs: dict[str, Any]) -> GenerationConfig | None:
        try:
            config, unused = self.model._prepare_generation_config(None, **generation_kwargs)
            if unused or not _config_eligible(config):
                return None
            config.validate()
            self.model._prepare_special_tokens(config, True, device=self.model.device)
        except Exception as error:  # generate will say what is wrong, in its own words
            log.debug("decoding %r with generate(): %s", generation_kwargs, error)
            return None
        return config  # type: ignore[no-any-return]

    @torch.inference_mode()
    def _decode(
        self,
        config: GenerationConfig,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        streamer: Any,
        custom_criteria: StoppingCriteriaList,
        custom_processors: LogitsProcessorList,
    ) -> torch.Tensor:
        model = self.model
        batch, prompt_length = input_ids.shape
        padded = bool((attention_mask == 0).any())
        mask = attention_mask if padded else None  # generate drops a mask of all ones
        processors = model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=prompt_length,
            encoder_input_ids=input_ids,
            logits_processor=custom_processors,
            device=input_ids.device,
            model_kwargs={"attention_mask": mask},
        )
        bounded = copy.copy(config)  # max_length is per call; the plan is shared
        bounded.max_length = prompt_length + config.max_new_tokens
        criteria = model._get_stopping_criteria(bounded, custom_criteria, tokenizer=None)
        pad = config._pad_token_tensor  # set from the end token when there is none
        if pad is not None:
            pad = pad.to(input_ids.device)
        if not any(hasattr(criterion, "eos_token_id") for criterion in criteria):
            pad = None  # no row finishes before the others: nothing to fill

        inputs: dict[str, Any] = {
            "past_key_values": DynamicCache(config=model.config),
            "use_cache": True,
            "return_dict": True,
        }
        if self._logits_to_keep:
            inputs["logits_to_keep"] = 1
        if self._position_ids:
            positions = attention_mask.long().cumsum(-1) - 1
            inputs["position_ids"] = positions.masked_fill(attention_mask == 0, 0)
        if mask is not None:
            inputs["attention_mask"] = mask
        unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        sequences = input_ids
        step_ids = input_ids
        while True:
            outputs = model(input_ids=step_ids, **inputs)
            logits = outputs.logits[:, -1].to(
                copy=True, dtype=torch.float32, device=input_ids.device
            )
            del outputs  # the prompt's logits are large; keep none of them past this step
            scores = processors(sequences, logits)
            if config.do_sample:
                probs = torch.nn.functional.softmax(scores, dim=-1)
                next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            if pad is not None:
                next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
            unfinished = unfinished & ~criteria(sequences, None)
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if unfinished.max() == 0:
                break
            step_ids = next_tokens[:, None]
            if "position_ids" in inputs:
                inputs["position_ids"] = inputs["position_ids"][:, -1:] + 1
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)
                inputs["attention_mask"] = mask
        if streamer is not None:
            streamer.end()
        return sequences


def _model_eligible(model: Any) -> bool:
    """A decoder-only model whose inputs generate prepares the default way, on the default
    dynamic cache, from transformers' own code."""
    try:
        return bool(
            not model.config.is_encoder_decoder
            and type(model).prepare_inputs_for_generation
            is GenerationMixin.prepare_inputs_for_generation
            and model._supports_default_dynamic_cache()
            and not model.is_remote_code()
        )
    except AttributeError:  # not a transformers generative model as this version knows it
        return False


def _config_eligible(config: GenerationConfig) -> bool:
    """Greedy or sampled decoding, one sequence a prompt, the dynamic cache, nothing that
    makes generate's loop do more than `_decode` does."""
    return bool(
        config.max_new_tokens is not None
        and config.get_generation_mode() in _MODES
        and (config.num_return_sequences or 1) == 1
        and config.cache_implementation in (None, "dynamic")
        and config.prefill_chunk_size is None
        and config.max_time is None
        and config.stop_strings is None
        and not config.return_dict_in_generate
        and not config.output_scores
        and not config.output_logits
        and not config.output_attentions
        and not config.output_hidden_states
        and (config.guidance_scale is None or config.guidance_scale == 1)
        and not getattr(config, "is_assistant", False)
        and config.compile_config is None
    )
