"""Filling a registration's templates, and reading the answer out of its response."""

from __future__ import annotations

import json
import math

import pytest

from modelyard.errors import InvalidArgument, Unavailable
from modelyard_server.http_api.extract import extract_text
from modelyard_server.http_api.render import render_body, render_headers, render_url

BODY = '{"prompt": {USER_PROMPT}, "t": {MODEL_TEMPERATURE}, "model": {MODEL_NAME}, "o": {"n": 1}}'


def test_the_body_holds_each_value_json_encoded() -> None:
    body = render_body(BODY, prompt='say "hi"\n{MODEL_NAME} ü', temperature=0.25, model="m-1")
    assert json.loads(body) == {
        "prompt": 'say "hi"\n{MODEL_NAME} ü',  # a placeholder inside the prompt stays text
        "t": 0.25,
        "model": "m-1",
        "o": {"n": 1},
    }


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -math.inf])
def test_a_temperature_that_is_not_a_finite_number_is_refused(temperature: float) -> None:
    with pytest.raises(InvalidArgument) as caught:
        render_body(BODY, prompt="p", temperature=temperature, model="m")
    assert caught.value.field == "parameters.temperature"


def test_the_url_holds_the_model_name_percent_encoded() -> None:
    assert render_url("https://api/v1/{MODEL_NAME}/chat", model="a b/c") == (
        "https://api/v1/a%20b%2Fc/chat"
    )


def test_header_references_are_read_from_the_environment() -> None:
    headers = {"Authorization": "Bearer ${API_KEY}", "X-Team": "${TEAM}-${REGION}", "A": "b"}
    environ = {"API_KEY": "sk-1", "TEAM": "t", "REGION": "eu"}
    assert render_headers(headers, environ) == {
        "Authorization": "Bearer sk-1",
        "X-Team": "t-eu",
        "A": "b",
    }


def test_a_missing_variable_fails_naming_it_and_no_value() -> None:
    with pytest.raises(Unavailable) as caught:
        render_headers({"X-Key": "${PRESENT}", "Authorization": "${ABSENT}"}, {"PRESENT": "s3cr3t"})
    assert "ABSENT" in caught.value.message
    assert "s3cr3t" not in caught.value.message


PATH = "data.items[].attributes.answer"


def _items(*answers: object) -> dict[str, object]:
    return {"data": {"items": [{"attributes": {"answer": a}} for a in answers]}}


def test_a_string_found_is_the_text() -> None:
    assert extract_text({"choices": [{"text": "hello"}]}, "choices[0].text") == "hello"
    assert extract_text({"a": ""}, "a") == ""


def test_a_list_of_strings_found_is_joined_with_newlines() -> None:
    assert extract_text(_items("one", "two"), PATH) == "one\ntwo"


@pytest.mark.parametrize(
    "document",
    [
        {"unexpected": True},  # the path finds nothing
        _items(),  # an empty list
        _items("one", 2),  # not only strings
        {"data": {"items": {"attributes": {"answer": "x"}}}},  # an object where a list goes
        [1, 2, 3],
        {"data": 7},
    ],
)
def test_anything_else_fails_the_call_quoting_the_body(document: object) -> None:
    with pytest.raises(Unavailable) as caught:
        extract_text(document, PATH)
    assert caught.value.message == (
        f"the API answered a body {PATH} cannot read: {json.dumps(document)}"
    )


def test_the_quoted_body_is_cut_at_100_characters() -> None:
    with pytest.raises(Unavailable) as caught:
        extract_text({"unexpected": "x" * 1000}, PATH)
    quoted = caught.value.message.split("cannot read: ", 1)[1]
    assert quoted == json.dumps({"unexpected": "x" * 1000})[:100] + "..."
