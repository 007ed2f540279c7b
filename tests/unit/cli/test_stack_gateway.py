"""The gateway in the local stack: started last, stopped first, its address in the ready
panel (with the base URL an OpenAI client takes) and in `modelyard status`."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from modelyard_cli.stack import Stack
from modelyard_cli.stack_view import ready_panel
from modelyard_cli.state import StackState
from modelyard_cli.status import services

STATE = StackState(
    pid=4242,
    started_at="2026-12-01T09:00:00+00:00",
    stack_file="/repo/examples/stack.yaml",
    ready=True,
    etcd="127.0.0.1:40001",
    control_plane="127.0.0.1:41002",
    composer="127.0.0.1:41001",
    gateway="127.0.0.1:41234",
    workers={"generators": "127.0.0.1:41003"},
)


def test_the_gateway_starts_after_the_composer(tmp_path: Path) -> None:
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text("workers: [{worker_id: a, models: []}]\n")
    assert Stack(stack_file).services() == [
        "etcd", "control plane", "worker a", "composer", "gateway",
    ]  # fmt: skip


def test_the_ready_panel_gives_the_gateway_and_the_openai_base_url_whole() -> None:
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    console.print(ready_panel(STATE, Path(".cache/stack"), title="stack ready", detached=False))
    file = console.file
    assert isinstance(file, io.StringIO)
    lines = file.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert [line for line in lines if " gateway " in line and "127.0.0.1:41234" in line]
    assert any("OPENAI_BASE_URL=http://127.0.0.1:41234/v1" in line for line in lines)


def test_status_checks_the_gateway_last_and_only_once_it_has_an_address() -> None:
    assert services(STATE)[-1] == ("gateway", "127.0.0.1:41234")
    older = StackState(pid=1, started_at="", stack_file="", composer="127.0.0.1:41001")
    assert [service for service, _ in services(older)][-1] == "composer"
