"""What the control plane's core logic drives, as small Protocols: the store it writes
desired state and health records to, and the per-worker probes and load feeds it starts and
stops. The process wires the real ones (etcd, ProberPool, LoadFeedPool); unit tests pass
fakes that record every call."""

from __future__ import annotations

from typing import Protocol

from modelyard_server.workerinfo import WorkerInfo


class Store(Protocol):
    """The writes the control plane makes to etcd (an aetcd client is one)."""

    async def put(self, key: bytes, value: bytes) -> object: ...

    async def delete(self, key: bytes) -> object: ...


class Probers(Protocol):
    """One health prober per worker registration (the leader's job)."""

    async def ensure(self, info: WorkerInfo, registration: int) -> None:
        """Probes `info` for this registration (its create revision); restarts a prober
        whose worker registered again or changed, and does nothing when it is current."""
        ...

    async def stop(self, worker_id: str) -> None:
        """Stops probing `worker_id`, if it was probed."""
        ...


class LoadFeeds(Protocol):
    """One load feed per registered worker (every replica follows them)."""

    async def ensure(self, worker_id: str, address: str) -> None:
        """Follows the load of `worker_id` at `address`; restarts a feed whose address
        changed, and does nothing when it is current."""
        ...

    async def stop(self, worker_id: str) -> None:
        """Stops following `worker_id` and forgets its last report."""
        ...
