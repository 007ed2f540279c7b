"""Device tags: one function (`worker_tags`) for what a worker registers and reports and
what `modelyard worker --describe` prints; the host's devices are faked through torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from typer.testing import CliRunner

from modelyard_cli.main import app
from workers.devices import worker_tags
from workers.server import Worker
from workers.settings import load_settings

HOST = {
    "cpu_count": str(os.cpu_count() or 1),
    "host_memory": str(psutil.virtual_memory().total),
}


@pytest.fixture(autouse=True)
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without CUDA or MPS, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_a_cpu_worker_is_tagged_with_its_host() -> None:
    assert worker_tags(["cpu", "auto"], {}) == {"device": "cpu", **HOST}
    assert worker_tags([], {}) == {"device": "cpu", **HOST}  # no models: still a cpu worker


def test_a_missing_device_is_left_out_of_the_tags() -> None:
    # its model fails at load and says why; the tags describe what exists
    assert worker_tags(["cuda:0"], {}) == {"device": "cpu", **HOST}


def test_the_strongest_device_present_names_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert worker_tags(["cpu", "auto"], {})["device"] == "mps"


def test_the_users_tags_are_added_and_win() -> None:
    tags = worker_tags(["cpu"], {"zone": "eu-1", "cpu_count": "4"})
    assert tags == {
        "device": "cpu",
        "host_memory": HOST["host_memory"],
        "zone": "eu-1",
        "cpu_count": "4",
    }


async def test_describe_prints_the_tags_the_worker_reports(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    models = [
        {"name": "echo", "class": "tests.support.models:Echo", "device": "cpu"},
        {"name": "gpu-echo", "class": "tests.support.models:Echo", "device": "cuda:0"},
    ]
    config.write_text(yaml.safe_dump({"models": models, "tags": {"zone": "eu-1"}}))
    done = CliRunner().invoke(app, ["worker", "--config", str(config), "--describe"])
    assert done.exit_code == 0, done.output
    printed = dict(_two_cell_rows(done.output))

    worker = Worker(load_settings(config))
    try:
        assert printed == worker.service.tags == {"device": "cpu", **HOST, "zone": "eu-1"}
    finally:
        await worker.abort()


def _two_cell_rows(output: str) -> list[tuple[str, str]]:
    """The body rows of the printed "device tags" table (tag, value)."""
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 2 and cells != ["tag", "value"]:
            rows.append((cells[0], cells[1]))
    return rows


def test_a_cpu_host_resolves_devices_without_loading_torch() -> None:
    # in a fresh interpreter: this test process has imported torch long ago
    code = (
        "import sys; from workers.devices import resolve_device, worker_tags;"
        "print(resolve_device('auto'), resolve_device('cpu'), worker_tags(['auto'], {})['device'],"
        " 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if os.path.exists("/dev/nvidiactl"):  # a GPU host must ask torch
        assert done.stdout.split()[0].startswith("cuda")
    else:
        assert done.stdout.split() == ["cpu", "cpu", "cpu", "False"]
