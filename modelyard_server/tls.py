"""TLS for a service's own port and for the channels it opens to other services.

One `TlsSettings` per service (its `tls:` section). With no certificate the service
listens in plaintext, which is for local development; with `cert_file` and `key_file` it
serves TLS, and with `client_auth` also requires every client to present a certificate
signed by `ca_file` (mutual TLS). The same settings make the service's outgoing channels
(composer → workers and control planes, control plane → workers): they trust `ca_file`
(the system's roots when unset) and present the service's own certificate, so a cluster
that requires client certificates accepts its own services.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert_file: Path | None = Field(
        None, description="This service's certificate chain (PEM); turns TLS on."
    )
    key_file: Path | None = Field(None, description="The certificate's private key (PEM).")
    ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) that signs the other services' certificates and, with "
        "client_auth, the clients'. Unset: the system's roots.",
    )
    client_auth: bool = Field(
        False, description="Require a client certificate signed by ca_file (mutual TLS)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        if self.cert_file is None and (self.ca_file is not None or self.client_auth):
            raise ValueError("tls.ca_file and tls.client_auth need TLS: set tls.cert_file too")
        if self.client_auth and self.ca_file is None:
            raise ValueError("tls.client_auth needs tls.ca_file to check client certificates")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Binds `address` with TLS when it is configured, in plaintext otherwise; the bound port
    (0 when it could not be bound)."""
    credentials = server_credentials(tls)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """None when TLS is off."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        require_client_auth=tls.client_auth,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials | None:
    """For the channels this service opens; None (plaintext) when TLS is off."""
    if not tls.enabled:
        return None
    return client_credentials(tls.ca_file, tls.cert_file, tls.key_file)


def client_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS that trusts `ca_file` (the system's roots when None), presenting `cert_file`
    when given (for servers that require client certificates)."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )
