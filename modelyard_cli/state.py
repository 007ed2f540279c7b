"""The local stack's state file: how every `modelyard` command finds a running stack.

`modelyard up` writes `<work-dir>/stack.json` (the supervisor's pid, every address, when it
started, which stack file) and removes it when the stack stops. While it runs, the
supervisor holds an exclusive lock on `<work-dir>/stack.lock`, so a second `up` on the same
folder is refused at once, and a state file whose supervisor is gone (killed, the machine
restarted) is known to be stale.

The work folder is MODELYARD_STACK_DIR when set, else `.cache/stack` (relative to where the
command runs, as `make demo` uses it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Literal

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
STACK_DIR_ENV = "MODELYARD_STACK_DIR"

Service = Literal["composer", "controlplane"]

#: Where a client command looks for a service when no --flag names it: the environment,
#: then a running local stack, then the default port.
ADDRESS_ENV: dict[Service, str] = {
    "composer": "MODELYARD_COMPOSER_ADDRESS",
    "controlplane": "MODELYARD_CONTROLPLANE_ADDRESS",
}
DEFAULT_ADDRESS: dict[Service, str] = {
    "composer": "127.0.0.1:50070",
    "controlplane": "127.0.0.1:50050",
}


def stack_dir() -> Path:
    """The default work folder of the local stack."""
    return Path(os.environ.get(STACK_DIR_ENV) or ".cache/stack")


@dataclass(frozen=True)
class StackState:
    """What `stack.json` holds. Addresses are host:port; metrics are URLs, by service."""

    pid: int
    started_at: str  # ISO 8601, UTC
    stack_file: str
    ready: bool = False
    etcd: str = ""
    control_plane: str = ""
    composer: str = ""
    gateway: str = ""  # the OpenAI API: http://<gateway>/v1
    workers: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    graphs: list[str] = field(default_factory=list)
    log_file: str = ""  # the supervisor's own output, when it runs detached
    # `up --tls`: the CA every service's certificate chains to, the certificate commands
    # present (etcd requires one), the admin token's file; all "" for a plaintext stack
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token_file: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    def addresses(self) -> set[str]:
        """Every gRPC address of the stack (the gateway is HTTP)."""
        return {self.control_plane, self.composer, *self.workers.values()} - {""}

    def address(self, service: Service) -> str:
        return self.composer if service == "composer" else self.control_plane

    def describe(self) -> str:
        """A few words naming the stack, for messages."""
        return f"pid {self.pid}, " + (
            f"composer {self.composer}" if self.composer else "still starting"
        )


def read_state(work_dir: Path) -> StackState | None:
    """The state file's contents, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((work_dir / STATE_FILE).read_text())
        return StackState(**data)
    except (OSError, ValueError, TypeError):
        return None


def running_stack(work_dir: Path) -> StackState | None:
    """The state of the stack running from `work_dir`, or None when none runs there."""
    state = read_state(work_dir)
    return state if state is not None and pid_alive(state.pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    # A zombie (exited, not yet reaped by its parent) answers signal 0 too.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def default_address(service: Service) -> str:
    """The address a client command uses when no flag gives one: MODELYARD_<SERVICE>_ADDRESS,
    else the running local stack's (see `stack_dir`), else the default port."""
    from_env = os.environ.get(ADDRESS_ENV[service])
    if from_env:
        return from_env
    state = running_stack(stack_dir())
    if state is not None and state.address(service):
        return state.address(service)
    return DEFAULT_ADDRESS[service]


class StackRunning(Exception):
    """Another supervisor holds the work folder."""

    def __init__(self, work_dir: Path, state: StackState | None) -> None:
        self.work_dir = work_dir
        self.state = state
        running = state.describe() if state is not None else "its state file is missing"
        super().__init__(f"a stack is already running from {work_dir} ({running})")


class StateFile:
    """The supervisor's hold on its work folder: claim it, publish the state, release it.

    The lock lives as long as this process keeps its descriptor: a supervisor that dies
    in any way releases it, which is what makes a leftover state file stale.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.path = work_dir / STATE_FILE
        self._lock: IO[bytes] | None = None

    def claim(self) -> StackState | None:
        """Takes the work folder, removing a stale state file (returned, to say so).

        Raises StackRunning when another supervisor holds it.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.work_dir / LOCK_FILE).open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackRunning(self.work_dir, running_stack(self.work_dir)) from None
        self._lock = lock
        stale = read_state(self.work_dir)
        self.path.unlink(missing_ok=True)
        return stale

    def write(self, state: StackState) -> None:
        """Replaces the state file atomically: a reader sees the old state or the new."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Removes the state file, then lets the work folder go."""
        self.path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
