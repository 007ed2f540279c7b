"""A registration is refused with INVALID_ARGUMENT naming the wrong field, before anything
is stored; secrets can only be given by reference."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.endpoints import HttpApi
from modelyard.errors import InvalidArgument
from modelyard_server.http_api.header_secrets import REDACTED, carries_credentials, shown
from modelyard_server.http_api.validation import check_registration, host_port

GOOD = HttpApi(
    url_template="https://api.example.com/v1/{MODEL_NAME}/answer",
    body_template='{"prompt": {USER_PROMPT}, "temperature": {MODEL_TEMPERATURE}, '
    '"model": {MODEL_NAME}, "options": {"n": 1}}',
    response_path="data.items[].attributes.answer",
    headers={"Authorization": "Bearer ${EXAMPLE_KEY}", "Content-Type": "application/json"},
    timeout_s=30.0,
    health_url="https://api.example.com/health",
)


def refused(model: str = "answers", owner: str = "team-a", **changes: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        check_registration(model, owner, dataclasses.replace(GOOD, **changes))
    return caught.value


def test_a_good_registration_passes() -> None:
    check_registration("answers", "team-a", GOOD)
    check_registration("m", "", dataclasses.replace(GOOD, headers={}, health_url=""))


def test_the_model_name_follows_the_naming_rules() -> None:
    error = refused(model="a b")
    assert error.field == "model"
    assert "model name 'a b' is not valid" in error.message


def test_the_owner_is_bounded_printable_text() -> None:
    check_registration("m", "Ana Müller (team-a)", GOOD)
    assert refused(owner="o" * 257).field == "owner"
    assert refused(owner="a\nb").field == "owner"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "a URL is required"),
        ("ftp://api.example.com/x", "must start with http:// or https://"),
        ("api.example.com/x", "must start with http:// or https://"),
        ("https:///x", "names no host"),
        ("https://api.example.com:99999/x", "is not a valid URL"),
        ("https://me:pw@api.example.com/x", "must not hold a user name or password"),
        ("https://api.example.com/{USER_PROMPT}", "may hold only {MODEL_NAME}, not {USER_PROMPT}"),
        ("https://api.example.com/" + "x" * 9000, "too long"),
    ],
)
def test_the_url_is_http_or_https_with_a_host_and_only_the_model_placeholder(
    url: str, problem: str
) -> None:
    error = refused(url_template=url)
    assert error.field == "http_api.url_template"
    assert problem in error.message
    assert len(error.message) < 300  # the client's text is quoted short


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"prompt": {USER_PROMPT}, "x": {TOP_P}}', "unknown placeholder {TOP_P}"),
        ('{"prompt": "fixed"}', "must hold {USER_PROMPT}"),
        ('{"prompt": "{USER_PROMPT}"}', "not JSON once its placeholders are filled in"),
        ('{"prompt": {USER_PROMPT}', "not JSON once its placeholders are filled in"),
        ('{"prompt": {USER_PROMPT}, "pad": "' + "x" * 70_000 + '"}', "too long"),
    ],
)
def test_the_body_holds_known_placeholders_the_prompt_and_is_json(body: str, problem: str) -> None:
    error = refused(body_template=body)
    assert error.field == "http_api.body_template"
    assert problem in error.message


@pytest.mark.parametrize(
    ("path", "problem"),
    [("", "a response path is required"), ("data.items[", "is not a JMESPath expression")],
)
def test_the_response_path_compiles_as_jmespath(path: str, problem: str) -> None:
    error = refused(response_path=path)
    assert error.field == "http_api.response_path"
    assert problem in error.message


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "X-Api-Key",
        "X-Auth-Token",
        "Client-Secret",
        "db-password",
    ],
)
def test_a_credential_header_given_literally_is_refused_without_echoing_it(name: str) -> None:
    error = refused(headers={name: "Bearer sk-live-1234567890"})
    assert error.field == f"http_api.headers.{name}"
    assert "${NAME} reference" in error.message
    assert "sk-live" not in error.message


@pytest.mark.parametrize(
    "value", ["sk-live-123", "${KEY} extra", "Bearer ${KEY}${OTHER}", "sk-live ${KEY}", ""]
)
def test_a_credential_value_is_one_reference_after_at_most_a_scheme_word(value: str) -> None:
    assert refused(headers={"Authorization": value}).field == "http_api.headers.Authorization"


@pytest.mark.parametrize("value", ["${KEY}", "Bearer ${OPENAI_API_KEY}", "Basic ${B64_CREDS}"])
def test_a_credential_value_by_reference_passes(value: str) -> None:
    check_registration("m", "", dataclasses.replace(GOOD, headers={"X-Api-Key": value}))


def test_header_names_values_and_count_are_checked() -> None:
    assert refused(headers={"Bad Name": "x"}).field == "http_api.headers"
    assert refused(headers={"X-Note": "a\r\nInjected: 1"}).field == "http_api.headers.X-Note"
    assert refused(headers={"X-Note": "café"}).field == "http_api.headers.X-Note"
    many = {f"X-H{i}": "v" for i in range(33)}
    error = refused(headers=many)
    assert (error.field, error.message) == ("http_api.headers", "at most 32 headers, not 33")


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection"])
def test_headers_the_http_client_sets_itself_are_refused(name: str) -> None:
    error = refused(headers={name: "x"})
    assert error.field == f"http_api.headers.{name}"
    assert "set by modelyard's HTTP client" in error.message


@pytest.mark.parametrize("seconds", [0.0, -1.0, 301.0, float("nan")])
def test_the_timeout_is_more_than_zero_and_at_most_five_minutes(seconds: float) -> None:
    assert refused(timeout_s=seconds).field == "http_api.timeout"


def test_the_health_url_is_http_or_https_when_set() -> None:
    error = refused(health_url="file:///etc/passwd")
    assert error.field == "http_api.health_url"
    assert "must start with http:// or https://" in error.message


def test_credential_headers_are_recognised_by_name_whatever_the_case() -> None:
    assert carries_credentials("AUTHORIZATION") and carries_credentials("x-goog-api-key")
    assert not carries_credentials("Content-Type")


def test_listings_show_references_and_redact_everything_else() -> None:
    assert shown("Bearer ${KEY}") == "Bearer ${KEY}"
    assert shown("application/json") == REDACTED
    assert shown("sk-live-1") == REDACTED


def test_the_address_is_the_urls_host_and_port() -> None:
    from urllib.parse import urlsplit

    assert host_port(urlsplit("https://api.example.com/x")) == "api.example.com:443"
    assert host_port(urlsplit("http://127.0.0.1:8080/x")) == "127.0.0.1:8080"
    assert host_port(urlsplit("http://[::1]/x")) == "[::1]:80"


@settings(max_examples=300, deadline=None)
@given(
    model=st.text(max_size=200),
    owner=st.text(max_size=300),
    url=st.one_of(st.text(max_size=300), st.just("https://h/{MODEL_NAME}")),
    body=st.one_of(st.text(max_size=300), st.just('{"q": {USER_PROMPT}}')),
    path=st.text(max_size=200),
    headers=st.dictionaries(st.text(max_size=40), st.text(max_size=80), max_size=40),
    timeout=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_input_passes_or_is_invalid_argument_with_a_short_message(
    model: str,
    owner: str,
    url: str,
    body: str,
    path: str,
    headers: dict[str, str],
    timeout: float,
) -> None:
    api = HttpApi(url, body, path, headers=headers, timeout_s=timeout)
    refusal: InvalidArgument | None = None
    try:
        check_registration(model, owner, api)
    except InvalidArgument as error:  # anything else fails the test
        refusal = error
    if refusal is not None:
        assert refusal.field
        assert len(refusal.message) < 600  # client text is quoted short
