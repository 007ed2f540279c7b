"""The HTTP client of registered APIs against real local servers: JSON in and out, the
size limit, redirects, timeouts and the SSRF guard on the address connected to."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from modelyard.errors import Unavailable
from modelyard_server.http_api.client import HttpApiClient
from modelyard_server.http_api.settings import HttpApiSettings
from tests.integration.tls_certs import make_ca
from tests.support.http_apis import FakeApi

LOOPBACK_ONLY = HttpApiSettings(allowed_networks=["127.0.0.1/32"], max_response_bytes=64 * 1024)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi("a", big_bytes=100 * 1024) as server:
        yield server


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpApiClient]:
    http = HttpApiClient(LOOPBACK_ONLY)
    yield http
    await http.aclose()


def _body(prompt: str) -> bytes:
    return json.dumps({"prompt": prompt}).encode()


async def test_posts_the_body_with_the_headers_and_returns_the_parsed_answer(
    client: HttpApiClient, api: FakeApi
) -> None:
    answer = await client.post_json(
        api.url("/good"), _body("hi"), {"x-api-key": "k1"}, timeout_s=10
    )
    assert answer == {"data": {"items": [{"attributes": {"answer": "a: hi"}}]}}
    (received,) = api.requests
    assert received.body == {"prompt": "hi"}
    assert received.headers["x-api-key"] == "k1"
    assert received.headers["content-type"] == "application/json"


async def test_a_registration_s_content_type_replaces_the_default_one(
    client: HttpApiClient, api: FakeApi
) -> None:
    own = {"Content-Type": "application/json; charset=utf-8"}
    await client.post_json(api.url("/good"), _body("hi"), own, timeout_s=10)
    assert api.requests[0].headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/error", "the API answered HTTP 500"),
        ("/big", "larger than 65536 bytes"),
        ("/notjson", "not JSON"),
        ("/redirect-other", r"another host \(http://127\.0\.0\.2:\d+\)"),
        ("/redirect-loop", "redirected more than 3 times"),
    ],
)
async def test_a_bad_answer_fails_the_call_as_unavailable_saying_why(
    client: HttpApiClient, api: FakeApi, path: str, failure: str
) -> None:
    with pytest.raises(Unavailable, match=failure):
        await client.post_json(api.url(path), _body("hi"), {}, timeout_s=10)


async def test_a_cross_host_redirect_is_not_followed(client: HttpApiClient, api: FakeApi) -> None:
    with pytest.raises(Unavailable):
        await client.post_json(api.url("/redirect-other"), _body("hi"), {}, timeout_s=10)
    assert api.paths() == ["/redirect-other"]  # the other host was never called


async def test_a_same_host_redirect_is_followed_with_the_method_and_body(
    client: HttpApiClient, api: FakeApi
) -> None:
    answer = await client.post_json(api.url("/redirect-same"), _body("moved"), {}, timeout_s=10)
    assert answer["data"]["items"][0]["attributes"]["answer"] == "a: moved"
    assert api.paths() == ["/redirect-same", "/good"]
    assert api.requests[1].body == {"prompt": "moved"}  # 307 keeps POST and its body


async def test_an_answer_slower_than_the_timeout_fails_the_call(
    client: HttpApiClient, api: FakeApi
) -> None:
    with pytest.raises(Unavailable, match=r"no answer within 0\.2 s"):
        await client.post_json(api.url("/slow"), _body("hi"), {}, timeout_s=0.2)


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.1.2.3:8080/v1", "private"),
        ("http://[fd00:ec2::254]/latest", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://127.0.0.2:9/v1", "loopback"),  # loopback, but outside the allowed /32
    ],
)
async def test_the_ssrf_guard_refuses_private_and_metadata_addresses(
    client: HttpApiClient, url: str, refusal: str
) -> None:
    with pytest.raises(Unavailable, match=refusal):
        await client.post_json(url, _body("hi"), {}, timeout_s=5)


async def test_the_ssrf_guard_checks_what_a_name_resolves_to(api: FakeApi) -> None:
    """ "localhost" resolves to loopback: refused unless allowed, called when allowed."""
    refusing = HttpApiClient(HttpApiSettings())
    allowing = HttpApiClient(HttpApiSettings(allowed_networks=["127.0.0.0/8", "::1/128"]))
    url = f"http://localhost:{api.port}/good"
    try:
        with pytest.raises(
            Unavailable, match=r"localhost \(127\.0\.0\.1\) are refused: a loopback address"
        ):
            await refusing.post_json(url, _body("hi"), {}, timeout_s=5)
        assert api.requests == []
        answer = await allowing.post_json(url, _body("hi"), {}, timeout_s=5)
        assert answer["data"]["items"][0]["attributes"]["answer"] == "a: hi"
    finally:
        await refusing.aclose()
        await allowing.aclose()


async def test_nothing_listening_fails_the_call_as_unavailable(client: HttpApiClient) -> None:
    with FakeApi("gone") as gone:
        url = gone.url("/good")
    with pytest.raises(Unavailable, match=r"could not connect to http://127\.0\.0\.1:\d+$"):
        await client.post_json(url, _body("hi"), {}, timeout_s=5)


@pytest.fixture
def https_api(tmp_path: Path) -> Iterator[FakeApi]:
    """An HTTPS API whose certificate names only "localhost" (a throwaway CA)."""
    authority = make_ca(tmp_path)
    pems = authority.issue("api", "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pems.cert, pems.key)
    with FakeApi("tls", tls=tls) as server:
        yield server


async def test_tls_verifies_the_url_s_name_on_the_checked_address(
    https_api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard connects to the address it checked, yet the certificate is verified
    against the URL's host name: "localhost" passes, the bare address it resolved to (which
    the certificate does not name) does not."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    client = HttpApiClient(HttpApiSettings(allowed_networks=["127.0.0.0/8", "::1/128"]))
    try:
        answer = await client.post_json(
            https_api.url("/good", host="localhost"), _body("hi"), {}, timeout_s=10
        )
        assert answer["data"]["items"][0]["attributes"]["answer"] == "tls: hi"
        with pytest.raises(Unavailable, match="could not connect"):
            await client.post_json(https_api.url("/good"), _body("hi"), {}, timeout_s=10)
    finally:
        await client.aclose()
    assert len(https_api.requests) == 1
