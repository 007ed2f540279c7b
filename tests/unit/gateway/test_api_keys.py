"""API keys kept as digests, and what the gateway answers when the cluster refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.api_keys import ApiKeys
from gateway.errors import from_modelyard
from gateway.server import Gateway
from gateway.settings import GatewayAuth, GatewaySettings
from modelyard.errors import PermissionDenied, Unauthenticated


def test_only_a_configured_key_is_accepted() -> None:
    keys = ApiKeys(["sk-one", "sk-two"])
    assert keys.required
    assert keys.accepts(b"sk-two")
    assert not keys.accepts(b"sk-tw")
    assert not keys.accepts(b"sk-two ")


def test_no_keys_means_none_are_required() -> None:
    assert not ApiKeys([]).required
    assert not ApiKeys([""]).required


def test_keys_from_the_environment_and_a_file_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# issued today\nsk-file  # the batch job\n\n")
    monkeypatch.setenv("MODELYARD_GATEWAY_AUTH__API_KEYS", '["sk-env"]')
    monkeypatch.setenv("MODELYARD_GATEWAY_AUTH__API_KEYS_FILE", str(keys_file))
    settings = GatewaySettings()
    assert settings.auth.keys() == ["sk-env", "sk-file"]
    assert "sk-env" not in repr(settings)


@pytest.mark.parametrize("refusal", [Unauthenticated("no token"), PermissionDenied("no role")])
def test_a_refusal_of_the_gateway_itself_is_a_server_error_not_a_bad_key(
    refusal: Unauthenticated | PermissionDenied,
) -> None:
    answer = from_modelyard(refusal)
    assert (answer.status, answer.type) == (500, "server_error")
    assert "auth.token" in answer.message


async def test_keys_over_plain_http_are_warned_about_without_showing_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = Gateway(GatewaySettings(auth=GatewayAuth(api_keys=[SecretStr("sk-secret-key")])))
    await gateway.abort()  # it opened nothing yet but its clients
    assert "cross the network in the clear" in caplog.text
    assert "sk-secret-key" not in caplog.text
