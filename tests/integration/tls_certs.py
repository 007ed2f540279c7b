"""Throwaway certificates (trustme) written as PEM files, for TLS tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import trustme

from modelyard_server.tls import TlsSettings, client_credentials


@dataclass(frozen=True)
class Pems:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    ca: trustme.CA
    ca_file: Path
    folder: Path

    def issue(self, name: str, *identities: str) -> Pems:
        """A certificate for `identities` (default: this machine's loopback names) with
        `name` as its common name; trustme's are good for servers and clients alike."""
        leaf = self.ca.issue_cert(*(identities or ("127.0.0.1", "localhost")), common_name=name)
        pems = Pems(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(str(pems.cert))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(pems.cert), append=True)
        leaf.private_key_pem.write_to_path(str(pems.key))
        return pems

    def server_tls(self, name: str = "server", *, client_auth: bool = False) -> TlsSettings:
        pems = self.issue(name)
        return TlsSettings(
            cert_file=pems.cert, key_file=pems.key, ca_file=self.ca_file, client_auth=client_auth
        )

    def credentials(self, client: Pems | None = None) -> grpc.ChannelCredentials:
        """What a client dials with: trusts this CA, presents `client` when given."""
        if client is None:
            return client_credentials(self.ca_file)
        return client_credentials(self.ca_file, client.cert, client.key)


def make_ca(folder: Path) -> Authority:
    ca = trustme.CA()
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Authority(ca, ca_file, folder)
