"""`modelyard up --tls`: the local stack's throwaway CA, its certificates and admin token,
and the settings each service starts with.

    <work-dir>/tls/ca.pem          the CA every service and client trusts (grpcurl -cacert)
    <work-dir>/tls/<name>.pem|key  one certificate per service, and `cli` for commands
    <work-dir>/tls/admin.token     the stack's admin token (drain, deploy, delete)

Every gRPC service serves TLS (clients need no certificate of their own, so grpcurl
-cacert works) and its channels to the others trust the CA and present its certificate.
etcd serves TLS and requires a client certificate signed by the CA (only the stack's own
services talk to it). The control plane and the composer require the admin token on admin
RPCs; serving stays open. The gateway serves HTTPS. A fresh CA and token are made at every
start: nothing outlives the stack but its files, which `up` replaces next time.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard_cli.etcd_server import EtcdTls

if TYPE_CHECKING:  # cryptography costs every process the CLI starts 8 MB: only under --tls
    from modelyard_cli.throwaway_ca import ServiceCertificate

TLS_FOLDER = "tls"
CLI = "cli"  # the certificate commands present (etcd requires one)
TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class StackTls:
    ca_file: Path
    certificates: dict[str, ServiceCertificate]
    token_file: Path

    def service(self, service: str) -> dict[str, str]:
        """A stack service's `tls:` section: serve with its certificate, trust the CA."""
        issued = self.certificates[certificate_name(service)]
        return {
            "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file),
            "ca_file": str(self.ca_file),
        }

    def etcd_client(self, service: str) -> dict[str, str]:
        """What a service's `etcd:` section adds to reach etcd: the CA and its certificate."""
        issued = self.certificates[certificate_name(service)]
        return {
            "ca_file": str(self.ca_file),
            "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file),
        }

    def admin_auth(self) -> dict[str, Any]:
        """An `auth:` section requiring the stack's admin token on admin RPCs."""
        return {"admin_tokens_file": str(self.token_file)}

    def etcd_server(self) -> EtcdTls:
        cli, etcd = self.certificates[CLI], self.certificates["etcd"]
        return EtcdTls(
            ca_file=self.ca_file,
            cert_file=etcd.cert_file,
            key_file=etcd.key_file,
            client_cert_file=cli.cert_file,  # its health polls and etcdctl
            client_key_file=cli.key_file,
            client_cert_auth=True,
        )

    @property
    def cli(self) -> ServiceCertificate:
        return self.certificates[CLI]


def certificate_name(service: str) -> str:
    """The certificate's (common) name of a stack service: "worker generators" ->
    "worker-generators", "control plane" -> "controlplane"."""
    return service.replace("control plane", "controlplane").replace(" ", "-")


def make_stack_tls(work_dir: Path, services: list[str]) -> StackTls:
    """A fresh CA, a certificate for each of `services` (the stack's names) and for the
    CLI, and a new admin token, in `<work_dir>/tls`."""
    from modelyard_cli.throwaway_ca import make_throwaway_ca

    folder = work_dir / TLS_FOLDER
    names = [certificate_name(service) for service in services]
    ca = make_throwaway_ca(folder, [*names, CLI])
    token_file = folder / TOKEN_FILE
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)  # before the token is in it, whatever the umask
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    return StackTls(ca.ca_file, ca.certificates, token_file)
