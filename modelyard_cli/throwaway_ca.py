"""A throwaway certificate authority for a local stack (`modelyard up --tls`).

One CA and one certificate per service, all valid for 127.0.0.1 and localhost and usable
as server and client certificates (so services present theirs to each other under mutual
TLS), written as PEM files into the stack's folder. The CA's key stays there too: this is
for a laptop or CI, not for production, where certificates come from the operator's CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: long enough for any stack's life, short enough that a leaked copy expires
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServiceCertificate:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ThrowawayCa:
    ca_file: Path
    certificates: dict[str, ServiceCertificate]


def make_throwaway_ca(folder: Path, services: list[str]) -> ThrowawayCa:
    """A fresh CA in `folder` (ca.pem, ca.key) and `<service>.pem`/`<service>.key` for each
    of `services` (their common names), private keys readable by the owner only."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelyard throwaway CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "ca.key", ca_key)
    issued = {
        service: _issue(folder, service, ca_cert.subject, ca_key, now) for service in services
    }
    return ThrowawayCa(ca_file, issued)


def _issue(
    folder: Path,
    service: str,
    issuer: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> ServiceCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)])
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder(subject, issuer, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    issued = ServiceCertificate(folder / f"{service}.pem", folder / f"{service}.key")
    issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key_file, key)
    return issued


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + VALIDITY)
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)  # before the key is in it, whatever the umask
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
