"""A 3-member etcd cluster on loopback, as production runs etcd, for failover tests.

with EtcdCluster() as cluster:       # three members, one leader, in about a second
    settings = cluster.settings()    # every member's endpoint: clients fail over between them
    leader = cluster.wait_for_leader()
    leader.kill()                    # kill -9: the other two elect a new leader
    leader.start()                   # it rejoins from its data dir

Timing keeps production's proportions at half their size: etcd's defaults are a 100 ms
heartbeat and a 1 s election timeout beside 2-3 s leases, so a 50 ms / 500 ms cluster
beside 1-2 s leases exercises the same race (does a lease session outlast an etcd
election?) twice as fast. Members keep fsync off: a test's data need not survive a crash
of the host.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from modelyard_cli.etcd_server import (
    EtcdServer,
    EtcdTls,
    EtcdUser,
    RaftTiming,
    enable_auth,
    free_port,
    run_etcdctl,
    settings_for,
)
from modelyard_server.etcd import EtcdSettings

#: half of etcd's defaults (100 ms / 1000 ms): the same ratio of heartbeat to election
HALF_PRODUCTION = RaftTiming(heartbeat_ms=50, election_ms=500)


class EtcdCluster:
    def __init__(
        self,
        size: int = 3,
        *,
        timing: RaftTiming = HALF_PRODUCTION,
        tls: EtcdTls | None = None,
        user: EtcdUser | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="modelyard-etcd-cluster-"))
        names = [chr(ord("a") + i) for i in range(size)]
        peers = {name: free_port() for name in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{port}" for n, port in peers.items())
        root_password = user.password if user and user.name == "root" else secrets.token_urlsafe()
        self.members = [
            EtcdServer(
                self.root / name,
                tls=tls,
                user=user,
                name=name,
                timing=timing,
                peer_port=peers[name],
                initial_cluster=initial,
                log_level="info",  # raft elections, for `elected_after`
            )
            for name in names
        ]
        for member in self.members:
            member.root_password = root_password
        self.timing = timing
        self.user = user

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def settings(self, prefix: str = "/modelyard") -> EtcdSettings:
        first = self.members[0]
        return settings_for(self.endpoints, first.tls, self.user, prefix)

    def start(self, timeout: float = 30.0) -> None:
        for member in self.members:  # together: none is healthy before a quorum runs
            member.launch()
        for member in self.members:
            member.wait_healthy(timeout)
        if self.user is not None:
            enable_auth(self.members[0], self.user)

    def leader(self) -> EtcdServer | None:
        """The member that leads now, if any (a running member's own word)."""
        return next((m for m in self.members if m.pid is not None and m.is_leader()), None)

    def wait_for_leader(self, timeout: float = 15.0, other_than: EtcdServer | None = None) -> float:
        """Waits until a member other than `other_than` leads; seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while (leader := self.leader()) is None or leader is other_than:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no etcd leader within {timeout} s")
            time.sleep(0.01)
        return time.monotonic() - started

    def elected_after(self, moment: float) -> float | None:
        """Seconds from `moment` (time.time()) until a member saw a new leader elected."""
        elections = [t for m in self.members for t in m.elections_since(moment)]
        return min(elections) - moment if elections else None

    def etcdctl(self, *args: str) -> str:
        """etcdctl against every running member (as root once authentication is on)."""
        running = [m for m in self.members if m.pid is not None]
        return run_etcdctl(running, args, stdin=None, root=True)

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
