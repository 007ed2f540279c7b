"""decoding.Decoder gives what model.generate gives, token for token, or calls generate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from workers.hf.tasks.decoding import Decoder

PAD = 0


@pytest.fixture(scope="module")
def gpt2(tiny_checkpoints: dict[str, Path]) -> Any:
    model: Any = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoints["tiny-gpt2"]))
    return model.eval()


@pytest.fixture(scope="module")
def llama() -> Any:
    """A random two-layer Llama: rotary positions and grouped key/value heads, which GPT-2
    (learned positions) does not exercise."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    model: Any = LlamaForCausalLM(config)
    return model.eval()


def _left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = [[PAD] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    return torch.tensor(ids), torch.tensor(mask)


class _Recording(BaseStreamer):
    def __init__(self) -> None:
        self.puts: list[list[int]] = []
        self.ended = 0

    def put(self, value: Any) -> None:
        self.puts.append(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ended += 1


def _both(model: Any, rows: list[list[int]], seed: int = 7, **kwargs: Any) -> tuple[Any, Any]:
    input_ids, attention_mask = _left_padded(rows)
    torch.manual_seed(seed)
    expected = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    torch.manual_seed(seed)
    got = Decoder(model).generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return expected, got


ONE = [[5, 17, 9, 23, 11]]
BATCH = [[5, 17, 9, 23, 11], [40, 3], [8, 8, 30, 12, 6, 19, 4]]
SETTINGS = [
    pytest.param({"do_sample": False}, id="greedy"),
    pytest.param({"do_sample": True}, id="sampled-defaults"),
    pytest.param({"do_sample": True, "temperature": 0.7, "top_k": 12, "top_p": 0.9}, id="sampled"),
    pytest.param({"do_sample": False, "repetition_penalty": 1.4}, id="repetition-penalty"),
    pytest.param({"do_sample": False, "no_repeat_ngram_size": 2}, id="no-repeat-ngram"),
]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("rows", [ONE, BATCH], ids=["one", "padded-batch"])
@pytest.mark.parametrize("settings", SETTINGS)
def test_the_tokens_are_generates(
    name: str, rows: list[list[int]], settings: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(name)
    expected, got = _both(model, rows, max_new_tokens=12, pad_token_id=PAD, **settings)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_rows_that_reach_the_end_token_are_padded_while_others_go_on(llama: Any) -> None:
    # the token greedy decoding gives the first row at its third step ends that row
    input_ids, attention_mask = _left_padded(BATCH)
    free = llama.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=10,
        pad_token_id=PAD,
        eos_token_id=None,
    )
    new = free[:, input_ids.shape[1] :].tolist()
    eos = new[0][2]
    assert eos not in new[0][:2] and eos not in new[1]  # the second row goes on past it
    expected, got = _both(llama, BATCH, max_new_tokens=10, pad_token_id=PAD, eos_token_id=eos)
    assert torch.equal(got, expected)
    rows = got[:, input_ids.shape[1] :].tolist()
    assert rows[0] == [*new[0][:3], *[PAD] * 7]
    assert rows[1] == new[1]


def test_the_streamer_sees_what_generates_streamer_sees(gpt2: Any) -> None:
    input_ids, attention_mask = _left_padded(ONE)
    streams = []
    for generate in (gpt2.generate, Decoder(gpt2).generate):
        streamer = _Recording()
        generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=6,
            pad_token_id=PAD,
            streamer=streamer,
        )
        streams.append((streamer.puts, streamer.ended))
    assert streams[0] == streams[1]
    puts, ended = streams[1]
    assert puts[0] == ONE[0] and len(puts) == 7 and ended == 1  # the prompt, then a token a put


class _StopAfter(StoppingCriteria):
    def __init__(self, steps: int) -> None:
        self.left = steps

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.left -= 1
        return torch.full((input_ids.shape[0],), self.left <= 0, dtype=torch.bool)


class _Forbid(LogitsProcessor):
    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.token] = -float("inf")
        return scores


def test_the_callers_criteria_and_processors_apply(llama: Any) -> None:
    input_ids, attention_mask = _left_padded(BATCH)
    plain = llama.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, pad_token_id=PAD
    )
    favourite = int(plain[0, input_ids.shape[1]])
    outputs = []
    for generate in (llama.generate, Decoder(llama).generate):
        outputs.append(
            generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=8,
                pad_token_id=PAD,
                stopping_criteria=StoppingCriteriaList([_StopAfter(3)]),
                logits_processor=LogitsProcessorList([_Forbid(favourite)]),
            )
        )
    assert torch.equal(outputs[0], outputs[1])
    assert outputs[1].shape[1] == input_ids.shape[1] + 3
    assert favourite not in outputs[1][:, input_ids.shape[1] :].tolist()[0]


def test_a_supported_call_does_not_go_through_generate(
    gpt2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = Decoder(gpt2)
    expected, _ = _both(gpt2, ONE, max_new_tokens=4, pad_token_id=PAD)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("generate() was called")

    monkeypatch.setattr(gpt2, "generate", refuse)
    input_ids, attention_mask = _left_padded(ONE)
    got = decoder.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4, pad_token_id=PAD
    )
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"num_beams": 2}, id="beams"),
        pytest.param({"do_sample": True, "num_return_sequences": 2}, id="several-sequences"),
        pytest.param({"max_time": 30.0}, id="time-limit"),
        pytest.param({"cache_implementation": "static"}, id="static-cache"),
    ],
)
def test_what_the_loop_does_not_reproduce_goes_to_generate(
    gpt2: Any, settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = Decoder(gpt2)
    assert decoder.plan({"max_new_tokens": 4, "pad_token_id": PAD, **settings}) is None
    calls: list[dict[str, Any]] = []
    generate = gpt2.generate

    def recording(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return generate(**kwargs)

    monkeypatch.setattr(gpt2, "generate", recording)
    input_ids, attention_mask = _left_padded(ONE)
    decoder.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=4,
        pad_token_id=PAD,
        **settings,
    )
    assert len(calls) == 1 and all(calls[0][k] == v for k, v in settings.items())


def test_arguments_generate_would_refuse_reach_generate(gpt2: Any) -> None:
    decoder = Decoder(gpt2)
    input_ids, attention_mask = _left_padded(ONE)
    assert decoder.plan({"max_new_tokens": 4, "not_an_argument": 1}) is None
    with pytest.raises(ValueError, match="not_an_argument"):
        decoder.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=4,
            not_an_argument=1,
        )
