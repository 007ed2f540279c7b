"""What a registered API takes from a PredictRequest: the prompt and the temperature."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.errors import InvalidArgument
from modelyard.values import to_value_map
from modelyard_server.http_api.signature import describe, prompt_of, temperature_of


@pytest.mark.parametrize(
    ("inputs", "prompt"),
    [
        ({"prompt": "p", "text": "t", "other": "o"}, "p"),
        ({"text": "t", "other": "o"}, "t"),
        ({"question": "q", "count": 3}, "q"),  # the only string
        ({"prompt": 7, "text": "t"}, "t"),  # a prompt that is no string is not the prompt
    ],
)
def test_the_prompt_is_prompt_else_text_else_the_only_string(
    inputs: dict[str, Any], prompt: str
) -> None:
    assert prompt_of(to_value_map(inputs)) == prompt


@pytest.mark.parametrize("inputs", [{}, {"count": 3}, {"a": "x", "b": "y"}])
def test_no_single_prompt_is_an_invalid_argument_on_inputs_prompt(inputs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        prompt_of(to_value_map(inputs))
    assert caught.value.field == "inputs.prompt"


def test_the_temperature_is_the_parameter_or_the_default() -> None:
    assert temperature_of(to_value_map({"temperature": 0.25}), 1.0) == 0.25
    assert temperature_of(to_value_map({"temperature": 2}), 1.0) == 2.0
    assert temperature_of(to_value_map({"max_tokens": 5}), 0.7) == 0.7
    with pytest.raises(InvalidArgument) as caught:
        temperature_of(to_value_map({"temperature": "hot"}), 1.0)
    assert caught.value.field == "parameters.temperature"


def test_the_metadata_says_prompt_or_text_in_and_text_out() -> None:
    metadata = describe("answers")
    assert metadata.model == "answers"
    assert [f.name for f in metadata.inputs] == ["prompt", "text"]
    assert not any(f.required for f in metadata.inputs)  # either one will do
    assert [f.name for f in metadata.outputs] == ["text"]
    assert [f.name for f in metadata.parameters] == ["temperature"]
