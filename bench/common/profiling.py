"""py-spy against a running process: record in the background while the bench drives the
process, then read the folded stacks ("frame;frame;...;leaf COUNT" lines, a frame being
"function (file:line)").

`--nonblocking` everywhere: pausing the target at every sample would slow it and skew the
very latencies being explained. With `gil`, only the thread holding the GIL is sampled
(on a GIL-bound server that is where throughput goes); without it py-spy counts every
thread the OS runs, which in a container includes an event loop in epoll_wait and parked
executor threads, so readers of such profiles set idle leaves apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

Stack = list[str]


def py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy is not installed (it is in the dev extra)")
    return found


def record(
    pid: int, seconds: float, output: Path, *, rate: int = 100, gil: bool = False
) -> subprocess.Popen[bytes]:
    """Starts py-spy on `pid` for `seconds`; `finish` the returned process."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(rate), "--format", "raw", "--nonblocking",
            "--output", str(output)]  # fmt: skip
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(recorder: subprocess.Popen[bytes], timeout: float) -> str:
    """Waits for a recording to end; '' when it succeeded, else what py-spy said."""
    try:
        _, errors = recorder.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        recorder.kill()
        _, errors = recorder.communicate(timeout=10)
    if recorder.returncode == 0:
        return ""
    return errors.decode(errors="replace")[-500:] or f"py-spy exited with {recorder.returncode}"


def read_folded(path: Path) -> list[tuple[Stack, int]]:
    """One (frames, samples) per distinct stack, root first."""
    samples = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


def save_stacks(folded: Path, output: Path) -> Path:
    """The folded stacks as JSON ({"stacks": {stack: samples}}), for a flame-graph tool or
    a second look; returns `output`."""
    stacks: dict[str, int] = {}
    for frames, count in read_folded(folded):
        key = ";".join(frames)
        stacks[key] = stacks.get(key, 0) + count
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"format": "py-spy collapsed stacks", "stacks": stacks}))
    return output
