"""What the CLI's client commands dial with, from the environment:

    MODELYARD_TOKEN      bearer token sent on every call (an admin's for drain, deploy, delete)
    MODELYARD_CA_FILE    CA bundle (PEM) of the stack's certificates: turns TLS on
    MODELYARD_CERT_FILE  client certificate and key (PEM), for servers that require mutual
    MODELYARD_KEY_FILE   TLS; both or neither

A call to an address of the running local stack (`modelyard_cli.state`) takes what these
leave unset from that stack: the TLS and admin token `modelyard up --tls` made (none for a
plaintext stack). With none set, a call anywhere else goes in plaintext with no token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelyard.channels import sync_channel
from modelyard.client import Client
from modelyard.composer_client import ComposerClient
from modelyard_cli.mistakes import fail
from modelyard_cli.state import StackState, running_stack, stack_dir
from modelyard_server.tls import client_credentials


@dataclass(frozen=True)
class CallCredentials:
    credentials: grpc.ChannelCredentials | None = None
    token: str | None = None

    def channel(self, address: str) -> grpc.Channel:
        return sync_channel(address, credentials=self.credentials, token=self.token)


TLS_NAMES = ("MODELYARD_CA_FILE", "MODELYARD_CERT_FILE", "MODELYARD_KEY_FILE")


def for_address(address: str, environ: Mapping[str, str] = os.environ) -> CallCredentials:
    """What to dial `address` with: the environment's TLS and token, each when set; what
    is not set comes from the local stack when `address` is one of its services."""
    own = from_environment(environ)
    state = running_stack(stack_dir())
    if state is None or address not in state.addresses():
        return own
    stack = of_stack(state)
    own_tls = any(environ.get(name, "").strip() for name in TLS_NAMES)
    return CallCredentials(
        own.credentials if own_tls else stack.credentials, own.token or stack.token
    )


def of_stack(state: StackState) -> CallCredentials:
    """The credentials of a running local stack's admin (plaintext, no token, unless it
    runs with --tls)."""
    if not state.tls:
        return CallCredentials()
    token = Path(state.token_file).read_text().strip() or None
    return CallCredentials(client_credentials(Path(state.ca_file)), token)


def from_environment(environ: Mapping[str, str] = os.environ) -> CallCredentials:
    token = environ.get("MODELYARD_TOKEN", "").strip() or None
    ca, cert, key = (
        _path(environ, name)
        for name in ("MODELYARD_CA_FILE", "MODELYARD_CERT_FILE", "MODELYARD_KEY_FILE")
    )
    if (cert is None) != (key is None):
        fail("set MODELYARD_CERT_FILE and MODELYARD_KEY_FILE together (mutual TLS)", code=2)
    if ca is None and cert is None:
        return CallCredentials(token=token)
    for path in (p for p in (ca, cert, key) if p is not None):
        if not path.is_file():
            fail(f"cannot read {path}: no such file (from the MODELYARD_*_FILE variables)", code=2)
    return CallCredentials(client_credentials(ca, cert, key), token)


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def worker_client(address: str, timeout: float) -> Client:
    call = for_address(address)
    return Client(address, timeout=timeout, credentials=call.credentials, token=call.token)


def composer_client(address: str, timeout: float) -> ComposerClient:
    call = for_address(address)
    return ComposerClient(address, timeout=timeout, credentials=call.credentials, token=call.token)
