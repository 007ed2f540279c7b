"""Signature checks: a bad request is refused with a message naming what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.signature import Field, check_inputs, resolve_parameters

INPUTS = (
    Field("text", "string"),
    Field("candidate_labels", "list", element_kind="string"),
    Field("image", "tensor", required=False),
)
PARAMS = (
    Field("top_k", "int"),
    Field("temperature", "float"),
    Field("pooling", "string", choices=("none", "mean", "cls")),
)


def test_good_inputs_pass_and_optional_ones_may_be_missing() -> None:
    inputs = {"text": "hi", "candidate_labels": ["a", "b"]}
    assert check_inputs(INPUTS, inputs) == inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"candidate_labels": []}, "missing input 'text' (a string); this model takes: text,"),
        ({"text": 3, "candidate_labels": []}, "input 'text' must be a string, got an integer"),
        ({"text": "x", "candidate_labels": "a"}, "must be a list of strings, got a string"),
        ({"text": "x", "candidate_labels": ["a", 2]}, "element 1 is an integer"),
        ({"text": "x", "candidate_labels": [], "img": 1}, "unknown input 'img'"),
        (
            {"text": "x", "candidate_labels": [], "image": [1]},
            "input 'image' must be a tensor, got a list",
        ),
    ],
)
def test_bad_inputs_say_what_was_expected(inputs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_inputs(INPUTS, inputs)


def test_tensors_are_accepted_for_tensor_inputs() -> None:
    image = np.zeros((2, 2), np.uint8)
    checked = check_inputs(INPUTS, {"text": "x", "candidate_labels": [], "image": image})
    assert checked["image"] is image


def test_a_model_without_declared_inputs_takes_anything() -> None:
    assert check_inputs((), {"anything": 1}) == {"anything": 1}


def test_overrides_replace_defaults_and_ints_widen_to_floats() -> None:
    resolved = resolve_parameters(PARAMS, {"top_k": 1, "temperature": 1.0}, {"temperature": 2})
    assert resolved == {"top_k": 1, "temperature": 2.0}
    assert isinstance(resolved["temperature"], float)


def test_null_resets_a_parameter() -> None:
    assert resolve_parameters(PARAMS, {"top_k": 1}, {"top_k": None}) == {"top_k": None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"top_p": 0.9}, "unknown parameter 'top_p'; this model accepts: top_k, temperature"),
        ({"top_k": "5"}, "parameter 'top_k' must be an integer, got a string"),
        ({"top_k": True}, "parameter 'top_k' must be an integer, got a bool"),
        ({"pooling": "max"}, "parameter 'pooling' must be one of 'none', 'mean', 'cls'"),
    ],
)
def test_bad_parameters_say_what_was_expected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_parameters(PARAMS, {}, overrides)


VECTOR = (
    Field("x", "tensor", dtype="float32"),
    Field("mask", "tensor", dtype="bool", required=False),
)


def test_a_list_for_a_tensor_with_a_dtype_becomes_that_tensor() -> None:
    checked = check_inputs(VECTOR, {"x": [[1, 2.5, 3]], "mask": [True, False]})
    assert checked["x"].dtype == np.float32 and checked["x"].tolist() == [[1.0, 2.5, 3.0]]
    assert checked["mask"].dtype == np.bool_
    given = np.arange(3, dtype=np.float64)  # a tensor is taken as it is, whatever its dtype
    assert check_inputs(VECTOR, {"x": given})["x"] is given


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            [[1, 2], [3]],
            "input 'x' must be a float32 tensor or a rectangular list of numbers: "
            "the list is ragged: element [1] has 1 elements, not 2",
        ),
        (
            ["1", 2],
            "input 'x' must be a float32 tensor or a rectangular list of numbers: "
            "element [0] is a string, not a number",
        ),
        (
            [True],
            "input 'x' must be a float32 tensor or a rectangular list of numbers: "
            "element [0] is a bool, not a number",
        ),
        (
            "1, 2, 3",
            "input 'x' must be a float32 tensor or a rectangular list of numbers, got a string",
        ),
        (3, "input 'x' must be a float32 tensor or a rectangular list of numbers, got an integer"),
    ],
)
def test_nothing_else_becomes_a_tensor(value: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_inputs(VECTOR, {"x": value})
    assert caught.value.message == message


def test_a_dtype_is_checked_when_the_model_is_defined() -> None:
    with pytest.raises(ValueError, match="field 'x': only tensors have a dtype"):
        Field("x", "list", dtype="float32")
    with pytest.raises(ValueError, match="field 'x': dtype 'float' is not one of"):
        Field("x", "tensor", dtype="float")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_parameter_must_be_finite(value: float) -> None:
    # NaN passes every range check (NaN <= 0 is False) and then breaks the model's maths
    with pytest.raises(InvalidArgument) as caught:
        resolve_parameters(PARAMS, {}, {"temperature": value})
    assert caught.value.message == f"parameter 'temperature' must be a finite number, got {value}"


def test_an_unknown_name_is_quoted_short() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_inputs(INPUTS, {"x" * 20_000: "hello"})
    assert caught.value.message == (
        f"unknown input {'x' * 100!r}... (20000 characters); "
        "this model takes: text, candidate_labels, image"
    )
