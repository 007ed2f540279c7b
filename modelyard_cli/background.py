"""`modelyard up --detach`: the supervisor runs on in the background; this command follows
its log until the stack is ready, prints the ready panel, and returns.

The background supervisor is `modelyard up --background` in a session of its own (no
terminal: Ctrl-C and a closed shell leave it be), writing to `<work-dir>/up.log`.
`modelyard down` stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from rich.console import Console

from modelyard_cli.stack_view import ready_panel
from modelyard_cli.state import StackRunning, StackState, StateFile, read_state
from modelyard_cli.supervisor import UpRequest, refusal

LOG_FILE = "up.log"


def start_detached(request: UpRequest, console: Console, errors: Console) -> int:
    """Starts the supervisor in the background and waits until its stack is ready."""
    probe = StateFile(request.work_dir)
    try:
        probe.claim()  # refused here at once, not after the background start fails
    except StackRunning as running:
        errors.print(refusal(running), markup=False, highlight=False)
        return 2
    probe.release()
    began = time.monotonic()
    log_path = request.work_dir / LOG_FILE
    command = [
        sys.executable, "-m", "modelyard_cli", "up", str(request.stack_file),
        "--work-dir", str(request.work_dir), "--background",
        *(["--fresh"] if request.fresh else []),
        *(["--tls"] if request.tls else []),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    console.print(f"starting the stack in the background (pid {supervisor.pid}, log {log_path})")
    with log_path.open("rb") as log_lines:
        try:
            state = _follow(supervisor, request.work_dir, log_lines, console)
        except KeyboardInterrupt:
            console.print("interrupted: stopping the background stack")
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait()
            echo_lines(log_lines, console)
            return 1
    if state is None:
        errors.print(
            f"the stack did not start (exit code {supervisor.returncode}); its log: {log_path}",
            highlight=False,
        )
        return supervisor.returncode or 1
    title = f"stack ready in {time.monotonic() - began:.1f} s (in the background)"
    console.print(ready_panel(state, request.work_dir, title=title, detached=True))
    return 0


def _follow(
    supervisor: subprocess.Popen[bytes], work_dir: Path, log: IO[bytes], console: Console
) -> StackState | None:
    """Echoes the supervisor's progress lines until its state file says ready (the state)
    or it exits (None)."""
    while True:
        state = read_state(work_dir)
        if state is not None and state.pid == supervisor.pid and state.ready:
            echo_lines(log, console)
            return state
        if supervisor.poll() is not None:
            echo_lines(log, console)
            return None
        echo_lines(log, console)
        time.sleep(0.1)


def echo_lines(log: IO[bytes], console: Console) -> None:
    """Prints the whole lines written since the last call."""
    while True:
        start = log.tell()
        line = log.readline()
        if not line.endswith(b"\n"):
            log.seek(start)  # a half-written line: read again next time
            return
        text = line.decode(errors="replace").rstrip("\n")
        console.print(text, markup=False, highlight=False, soft_wrap=True)
