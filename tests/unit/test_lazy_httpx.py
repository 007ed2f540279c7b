"""A service that calls no registered API does not import httpx: httpx 0.28 imports its
command-line tool (rich, pygments, click) whenever those are installed, 4 MB in every
control plane, composer and gateway. Each import is checked in a fresh interpreter."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["controlplane.server", "composer.server", "gateway.server"])
def test_a_service_imports_httpx_only_when_it_calls_a_registered_api(module: str) -> None:
    probe = f"import sys, {module}; print(sorted(m for m in ('httpx', 'rich') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


async def test_the_first_calls_at_once_share_one_http_client() -> None:
    from modelyard_server.http_api.caller import HttpApiCaller
    from modelyard_server.http_api.settings import HttpApiSettings

    caller = HttpApiCaller(HttpApiSettings())
    try:
        first, second = await asyncio.gather(caller._client(), caller._client())
        assert first is second  # one connection pool, however the first calls raced
    finally:
        await caller.aclose()
