"""The gateway's HTTPS and API keys, with the official `openai` client against a real
`modelyard gateway` process: in front of a control plane, a worker and a composer that
all require client certificates and a serving token, which the gateway presents."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio
import yaml
from pydantic import SecretStr

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.composer_client import AsyncComposerClient
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import start_service, stop_service
from modelyard_server.auth import AuthSettings
from tests.integration.conftest import running_worker
from tests.integration.tls_certs import Authority, make_ca

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_KEY = "sk-right-key-for-the-gateway"
SERVING = "serving-token-of-the-gateway"
ADMIN = "admin-token-of-the-test"
CLUSTER_AUTH = AuthSettings(admin_tokens=[SecretStr(ADMIN)], serving_tokens=[SecretStr(SERVING)])
HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
# a graph is a model: one string input, a `text` output
SAY = {
    "name": "say",
    "inputs": {"prompt": "string"},
    "nodes": [{"name": "a", "model": "echo", "inputs": {"text": "inputs.prompt"}}],
    "outputs": {"text": "a.text"},
}


MODELS = [
    {"name": "hello", "class": "tests.support.models:HelloChat"},
    {"name": "echo", "class": "tests.support.models:Echo"},
]


@dataclass
class Secured:
    base_url: str
    ca: Authority
    log: Path


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_ca(tmp_path_factory.mktemp("gateway-ca"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(
    ca: Authority, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Secured]:
    folder = tmp_path_factory.mktemp("gateway-security")
    with EtcdServer() as etcd:
        plane = ControlPlane(
            ControlPlaneSettings(
                port=0,
                etcd=etcd.settings(),
                tls=ca.server_tls("controlplane", client_auth=True),
                auth=CLUSTER_AUTH,
            )
        )
        await plane.start()
        worker_tls = ca.server_tls("worker", client_auth=True)
        async with running_worker(MODELS, etcd=etcd.settings(), tls=worker_tls, auth=CLUSTER_AUTH):
            composer_auth = CLUSTER_AUTH.model_copy(update={"token": SecretStr(SERVING)})
            composer = Composer(
                ComposerSettings(
                    port=0,
                    etcd=etcd.settings(),
                    controlplanes=[plane.address],
                    tls=ca.server_tls("composer", client_auth=True),
                    auth=composer_auth,
                )
            )
            await composer.start()
            await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
            async with AsyncComposerClient(
                composer.address,
                credentials=ca.credentials(ca.issue("deployer")),
                token=ADMIN,
                timeout=30,
            ) as graphs:
                await graphs.deploy(SAY)
            gateway_pems = ca.issue("gateway")
            config = folder / "gateway.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "controlplanes": [plane.address],
                        "composer": composer.address,
                        "tls": {
                            "cert_file": str(gateway_pems.cert),
                            "key_file": str(gateway_pems.key),
                            "ca_file": str(ca.ca_file),
                        },
                        "auth": {"api_keys": [API_KEY], "token": SERVING},
                    }
                )
            )
            log = folder / "gateway.log"
            process, address = await asyncio.to_thread(
                start_service, ["gateway", "--config", str(config), "-v"], log_file=log
            )
            try:
                yield Secured(f"https://{address}/v1", ca, log)
            finally:
                assert await asyncio.to_thread(stop_service, process) == 0
                await composer.stop()
        await plane.stop()


def trusts(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.ca_file)


@contextlib.asynccontextmanager
async def client(secured: Secured, api_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    trusting = openai.DefaultAsyncHttpxClient(verify=trusts(secured.ca))
    async with openai.AsyncOpenAI(
        base_url=secured.base_url, api_key=api_key, http_client=trusting, max_retries=0
    ) as opened:
        yield opened


async def listed(openai_client: openai.AsyncOpenAI) -> set[str]:
    return {model.id async for model in openai_client.models.list()}


async def chat(secured: Secured, model: str) -> str | None:
    """The model's answer once the gateway lists it (the worker has registered)."""
    async with client(secured, API_KEY) as openai_client, asyncio.timeout(60):
        while model not in await listed(openai_client):  # noqa: ASYNC110 (polls over HTTP)
            await asyncio.sleep(0.1)
        answer = await openai_client.chat.completions.create(model=model, messages=HELLO)
    return answer.choices[0].message.content


async def test_the_right_key_over_https_reaches_a_worker_over_mutual_tls(
    secured: Secured,
) -> None:
    assert await chat(secured, "hello") == "hello"


async def test_a_graph_is_called_through_the_composer_over_mutual_tls(secured: Secured) -> None:
    assert await chat(secured, "say") == "hi"


async def test_a_wrong_key_is_an_authentication_error(secured: Secured) -> None:
    async with client(secured, "sk-wrong") as wrong:
        with pytest.raises(openai.AuthenticationError) as raised:
            await wrong.chat.completions.create(model="hello", messages=HELLO)
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert raised.value.type == "invalid_request_error"
    assert "sk-wrong" not in raised.value.message


async def test_no_key_is_refused_on_every_route_but_health(secured: Secured) -> None:
    async with httpx.AsyncClient(
        base_url=secured.base_url.removesuffix("/v1"), verify=trusts(secured.ca)
    ) as http:
        models = await http.get("/v1/models")
        no_route = await http.get("/v1/nothing-here")
        health = await http.get("/health")
    assert models.status_code == no_route.status_code == 401
    assert models.json()["error"]["code"] == "invalid_api_key"
    assert models.headers["www-authenticate"] == "Bearer"
    assert health.status_code == 200


async def test_a_client_that_does_not_trust_the_ca_cannot_connect(secured: Secured) -> None:
    async with openai.AsyncOpenAI(
        base_url=secured.base_url, api_key=API_KEY, max_retries=0
    ) as untrusting:
        with pytest.raises(openai.APIConnectionError):
            await untrusting.models.list()


async def test_plain_http_to_the_https_port_gets_no_answer(secured: Secured) -> None:
    plain = secured.base_url.replace("https://", "http://")
    async with openai.AsyncOpenAI(base_url=plain, api_key=API_KEY, max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.models.list()


async def test_no_key_or_token_reaches_the_gateway_log(secured: Secured) -> None:
    async with client(secured, "sk-wrong") as wrong:
        with contextlib.suppress(openai.AuthenticationError):
            await wrong.models.list()
    await chat(secured, "hello")
    text = secured.log.read_text()
    assert "gateway serving the OpenAI API on https://" in text
    for secret in (API_KEY, SERVING, "sk-wrong"):
        assert secret not in text
