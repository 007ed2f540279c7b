"""The local stack's state file: one supervisor per work folder, stale files cleaned up,
and the addresses client commands fall back on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from modelyard_cli.state import (
    StackRunning,
    StackState,
    StateFile,
    default_address,
    pid_alive,
    read_state,
    running_stack,
)


def a_state(pid: int, composer: str = "127.0.0.1:41001") -> StackState:
    return StackState(
        pid=pid,
        started_at="2026-12-01T09:00:00+00:00",
        stack_file="/repo/examples/stack.yaml",
        ready=True,
        composer=composer,
        control_plane="127.0.0.1:41002",
        workers={"generators": "127.0.0.1:41003"},
    )


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_state_written_is_the_state_read(tmp_path: Path) -> None:
    state_file = StateFile(tmp_path)
    state_file.claim()
    state_file.write(a_state(os.getpid()))
    assert read_state(tmp_path) == a_state(os.getpid())
    assert json.loads((tmp_path / "stack.json").read_text())["composer"] == "127.0.0.1:41001"
    state_file.release()
    assert not (tmp_path / "stack.json").exists()
    assert read_state(tmp_path) is None


def test_a_second_supervisor_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = StateFile(tmp_path)
    first.claim()
    first.write(a_state(os.getpid()))
    with pytest.raises(StackRunning) as refused:
        StateFile(tmp_path).claim()
    assert f"pid {os.getpid()}" in str(refused.value)
    assert "composer 127.0.0.1:41001" in str(refused.value)
    assert read_state(tmp_path) == a_state(os.getpid())  # the refused one changed nothing
    first.release()
    second = StateFile(tmp_path)
    assert second.claim() is None  # free again once the first let go
    second.release()


def test_a_state_file_left_by_a_dead_supervisor_is_stale(tmp_path: Path) -> None:
    dead = a_state(a_dead_pid())
    (tmp_path / "stack.json").write_text(json.dumps(asdict(dead)))
    assert running_stack(tmp_path) is None  # clients ignore it
    state_file = StateFile(tmp_path)
    assert state_file.claim() == dead  # and a new supervisor removes it
    assert not (tmp_path / "stack.json").exists()
    state_file.release()


def test_running_stack_needs_a_live_supervisor(tmp_path: Path) -> None:
    assert running_stack(tmp_path) is None  # no file
    (tmp_path / "stack.json").write_text("{not json")
    assert running_stack(tmp_path) is None
    state_file = StateFile(tmp_path)
    state_file.claim()
    state_file.write(a_state(os.getpid()))
    assert running_stack(tmp_path) == a_state(os.getpid())
    state_file.release()


def test_an_exited_process_not_yet_reaped_is_not_alive() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # a zombie until waited for: signal 0 still reaches it
        deadline = time.monotonic() + 30
        while process_state(process.pid) != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert not pid_alive(process.pid)
    finally:
        process.wait()
    assert pid_alive(os.getpid())


def test_an_address_comes_from_the_environment_then_the_stack_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("MODELYARD_COMPOSER_ADDRESS", raising=False)
    monkeypatch.delenv("MODELYARD_CONTROLPLANE_ADDRESS", raising=False)
    assert default_address("composer") == "127.0.0.1:50070"
    assert default_address("controlplane") == "127.0.0.1:50050"

    state_file = StateFile(tmp_path)
    state_file.claim()
    state_file.write(a_state(os.getpid()))
    assert default_address("composer") == "127.0.0.1:41001"
    assert default_address("controlplane") == "127.0.0.1:41002"

    monkeypatch.setenv("MODELYARD_COMPOSER_ADDRESS", "10.0.0.7:50070")
    assert default_address("composer") == "10.0.0.7:50070"

    state_file.release()
    monkeypatch.delenv("MODELYARD_COMPOSER_ADDRESS")
    assert default_address("composer") == "127.0.0.1:50070"


def test_a_stack_still_starting_has_no_composer_address_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("MODELYARD_COMPOSER_ADDRESS", raising=False)
    state_file = StateFile(tmp_path)
    state_file.claim()
    state_file.write(StackState(pid=os.getpid(), started_at="now", stack_file="s.yaml"))
    assert default_address("composer") == "127.0.0.1:50070"
    with pytest.raises(StackRunning, match="still starting"):
        StateFile(tmp_path).claim()
    state_file.release()
