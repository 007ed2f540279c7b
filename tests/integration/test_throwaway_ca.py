"""The local stack's throwaway CA: its certificates serve TLS on 127.0.0.1 and identify
one service to another under mutual TLS."""

from __future__ import annotations

import stat
from pathlib import Path

from modelyard.client import AsyncClient
from modelyard_cli.throwaway_ca import make_throwaway_ca
from modelyard_server.tls import TlsSettings, client_credentials
from tests.integration.conftest import running_worker


async def test_its_certificates_carry_mutual_tls_between_services(tmp_path: Path) -> None:
    ca = make_throwaway_ca(tmp_path / "tls", ["worker", "composer"])
    worker, composer = ca.certificates["worker"], ca.certificates["composer"]
    tls = TlsSettings(
        cert_file=worker.cert_file, key_file=worker.key_file, ca_file=ca.ca_file, client_auth=True
    )
    models = [{"name": "echo", "class": "tests.support.models:Echo"}]
    async with running_worker(models, tls=tls) as running:
        credentials = client_credentials(ca.ca_file, composer.cert_file, composer.key_file)
        async with AsyncClient(running.address, credentials=credentials, timeout=10) as client:
            assert (await client.predict("echo", x=3)).outputs == {"x": 3}


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    make_throwaway_ca(tmp_path, ["worker"])
    for key in ("ca.key", "worker.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
