"""What a command dials with: the environment's TLS and token, each when set, and for an
address of the running local stack what they leave unset from a `--tls` stack's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard_cli.credentials import for_address
from modelyard_cli.stack_tls import make_stack_tls
from modelyard_cli.state import StackState, StateFile

COMPOSER = "127.0.0.1:41001"
ELSEWHERE = "10.0.0.9:50070"


@pytest.fixture
def tls_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackState:
    """The state file of a --tls stack running from this process (so it is alive)."""
    security = make_stack_tls(tmp_path, ["composer"])
    state = StackState(
        pid=os.getpid(),
        started_at="2026-12-01T09:00:00+00:00",
        stack_file="stack.yaml",
        ready=True,
        composer=COMPOSER,
        ca_file=str(security.ca_file),
        cert_file=str(security.cli.cert_file),
        key_file=str(security.cli.key_file),
        token_file=str(security.token_file),
    )
    StateFile(tmp_path).write(state)
    monkeypatch.setenv("MODELYARD_STACK_DIR", str(tmp_path))
    return state


def test_the_stacks_own_address_gets_its_ca_and_admin_token(tls_stack: StackState) -> None:
    call = for_address(COMPOSER, environ={})
    assert call.credentials is not None
    assert call.token == Path(tls_stack.token_file).read_text().strip()


def test_an_address_outside_the_stack_gets_plaintext_and_no_token(tls_stack: StackState) -> None:
    call = for_address(ELSEWHERE, environ={})
    assert (call.credentials, call.token) == (None, None)


def test_a_token_from_the_environment_wins_and_the_stacks_tls_stays(
    tls_stack: StackState,
) -> None:
    call = for_address(COMPOSER, environ={"MODELYARD_TOKEN": "mine"})
    assert call.token == "mine"
    assert call.credentials is not None


def test_no_running_stack_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_STACK_DIR", str(tmp_path))
    call = for_address(COMPOSER, environ={"MODELYARD_TOKEN": "mine"})
    assert (call.credentials, call.token) == (None, "mine")
