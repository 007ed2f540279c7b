"""etcd access shared by workers, control planes and composers: settings, client, keys.

aetcd speaks to one endpoint over plaintext; production etcd is a 3- or 5-member cluster,
often with TLS and users. `EtcdClient` adds both: several endpoints become one gRPC
channel that fails over between members, and TLS files become channel credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import aetcd
import grpc
import grpc.aio
from aetcd import rpc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard_server import etcd_auth
from modelyard_server.etcd_auth import RefusalAwareWatcher, TokenSource


class EtcdSettings(BaseModel):
    """Where etcd is and how to reach it (nested in each service's settings as `etcd`)."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:2379"],
        description="host:port of each member; several members must be IP addresses, or "
        "give one DNS name that resolves to all of them.",
    )
    prefix: str = Field("/modelyard", description="Key prefix of this modelyard installation.")
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = Field(None, description="CA bundle: turns TLS on.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client key (mutual TLS).")
    timeout: float = Field(5.0, gt=0, description="Seconds per etcd request.")

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one etcd endpoint is needed")
        for endpoint in value:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"etcd endpoint {endpoint!r} must look like host:port")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError("the etcd prefix starts with '/' and does not end with one")
        return value

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> EtcdSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("etcd.cert_file and etcd.key_file go together (mutual TLS)")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("a client certificate needs TLS: set etcd.ca_file too")
        if (self.username is None) != (self.password is None):
            raise ValueError("etcd.username and etcd.password go together")
        return self

    def target(self) -> str:
        """The gRPC target for the endpoints: one address, or an ipv4:/ipv6: address list."""
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        hosts = [e.rpartition(":")[0].strip("[]") for e in self.endpoints]
        try:
            versions = {ipaddress.ip_address(h).version for h in hosts}
        except ValueError:
            raise ValueError(
                "several etcd endpoints must be IP addresses; for host names give one DNS "
                "name that resolves to every member"
            ) from None
        if versions == {4}:
            return "ipv4:" + ",".join(self.endpoints)
        if versions == {6}:
            return "ipv6:" + ",".join(self.endpoints)
        raise ValueError("etcd endpoints must be all IPv4 or all IPv6 addresses")


class EtcdClient(aetcd.Client):  # type: ignore[misc]  # aetcd ships no types
    """aetcd's client, connecting to several endpoints and over TLS when configured."""

    def __init__(self, settings: EtcdSettings) -> None:
        super().__init__(
            username=settings.username,
            password=settings.password,
            timeout=int(settings.timeout) or 1,
            options={
                "grpc.lb_policy_name": "pick_first",
                # gRPC's default reconnect backoff grows to 120 s: after an etcd outage,
                # workers would re-register minutes late
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.min_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 1000,
            },
        )
        self._settings = settings
        self._connect_lock = asyncio.Lock()

    async def connect(self) -> None:
        # Mirrors aetcd.Client.connect, whose channel is always one plaintext address. Every
        # call connects on first use, so tasks race here: only the first may build the channel.
        async with self._connect_lock:
            if not self._connected.is_set():
                await self._connect()

    async def _connect(self) -> None:
        tokens = None
        interceptors: list[grpc.aio.ClientInterceptor] = []
        if self._username is not None and self._password is not None:
            tokens = TokenSource(self._username, self._password, self._timeout)
            interceptors = etcd_auth.interceptors(tokens)
        self.channel = _channel(self._settings, list(self._options.items()), interceptors)
        if tokens is not None:
            tokens.stub = rpc.AuthStub(self.channel)
            try:
                await tokens.current()  # a wrong name or password fails here, at once
            except BaseException:
                await self.channel.close()  # the next call connects afresh
                raise
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = RefusalAwareWatcher(
            rpc.WatchStub(self.channel),
            timeout=self._timeout,
            on_refused=tokens.forget if tokens is not None else None,
        )
        self._connected.set()


def _channel(
    settings: EtcdSettings,
    options: list[tuple[str, Any]],
    interceptors: list[grpc.aio.ClientInterceptor],
) -> grpc.aio.Channel:
    target = settings.target()
    if settings.ca_file is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.ca_file.read_bytes(),
        private_key=settings.key_file.read_bytes() if settings.key_file else None,
        certificate_chain=settings.cert_file.read_bytes() if settings.cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


#: What a connection failure's text means for the settings, so that a TLS or auth mistake
#: says what to change rather than only how the handshake failed.
_HINTS = (
    ("CERTIFICATE_VERIFY_FAILED", "etcd's certificate is not signed by etcd.ca_file"),
    ("Hostname Verification", "etcd's certificate does not name the address dialled"),
    (
        "BAD_CERTIFICATE",
        "etcd refused this client's certificate or got none: set etcd.cert_file and "
        "etcd.key_file to a pair signed by a CA that etcd trusts",
    ),
    (
        "CERTIFICATE_REQUIRED",
        "etcd wants a client certificate: set etcd.cert_file and etcd.key_file",
    ),
    ("WRONG_VERSION_NUMBER", "etcd does not serve TLS there: unset etcd.ca_file"),
    (
        # also seen when etcd dies during a handshake, so the hint says "if it lasts"
        "Handshake read failed",
        "if this lasts, etcd does not serve TLS there: unset etcd.ca_file, or use its TLS port",
    ),
    (
        "user name is empty",
        "etcd has authentication on: set etcd.username and etcd.password",
    ),
)


def hint_for(text: str) -> str | None:
    """What to change in the etcd settings, if `text` (an etcd failure) tells."""
    return next((hint for marker, hint in _HINTS if marker in text), None)


class Keys:
    """The etcd key layout (DESIGN.md), under one installation prefix."""

    def __init__(self, prefix: str = "/modelyard") -> None:
        self.prefix = prefix
        self.workers = f"{prefix}/workers/"
        self.desired_workers = f"{prefix}/desired/workers/"
        self.health = f"{prefix}/health/workers/"
        self.graphs = f"{prefix}/graphs/"
        self.registrations = f"{prefix}/registrations/"
        self.registration_health = f"{prefix}/health/registrations/"
        self.election = f"{prefix}/election/controlplane"

    def worker(self, worker_id: str) -> bytes:
        return f"{self.workers}{worker_id}".encode()

    def desired_worker(self, worker_id: str) -> bytes:
        return f"{self.desired_workers}{worker_id}".encode()

    def worker_health(self, worker_id: str) -> bytes:
        return f"{self.health}{worker_id}".encode()

    def registration(self, registration_id: str) -> bytes:
        return f"{self.registrations}{registration_id}".encode()

    def health_of_registration(self, registration_id: str) -> bytes:
        return f"{self.registration_health}{registration_id}".encode()
