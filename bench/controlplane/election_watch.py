"""The election as the bench sees it from outside: the election key and each replica's
`leader` flag, read together every 50 ms (`Observer`), and etcd's count of lease renewals
(`Renewals`), which tells when the leader's lease was last refreshed."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc.aio

from bench.common.errors import BenchError
from bench.common.servers import Server
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.etcd import EtcdClient, Keys

POLL_S = 0.05  # the key and the replicas' leader flags
ASK_TIMEOUT_S = 0.25  # one ListWorkers: a running replica answers in milliseconds
RENEWAL_POLL_S = 0.02  # etcd's renewal counter: its /metrics takes ~5 ms to render


@dataclass(frozen=True)
class Sample:
    at: float  # when the replicas were asked (the key was read just before)
    holder: tuple[str, int] | None  # the election key: (replica id, lease id)
    leading: frozenset[str]  # replicas that answered leader=true


class Observer:
    """Reads the election key, then asks every running replica whether it leads, every
    POLL_S; a stopped replica is not asked (calls queued on it would run when it resumes,
    beside the keep-alive under test)."""

    def __init__(self, etcd: EtcdServer, replicas: dict[str, Server]) -> None:
        self.samples: list[Sample] = []
        self.stopped: set[str] = set()
        self._key = Keys().election.encode()
        self._etcd = EtcdClient(etcd.settings())
        self._channels = {n: grpc.aio.insecure_channel(s.address) for n, s in replicas.items()}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        await self._etcd.close()

    async def _poll(self) -> None:
        while True:
            current = await self._etcd.get(self._key)
            holder = (current.value.decode(), int(current.lease)) if current else None
            at = time.monotonic()
            asked = [name for name in self._channels if name not in self.stopped]
            answers = await asyncio.gather(*(self._leads(name) for name in asked))
            leading = frozenset(name for name, leads in zip(asked, answers, strict=True) if leads)
            self.samples.append(Sample(at, holder, leading))
            await asyncio.sleep(POLL_S)

    async def _leads(self, name: str) -> bool:
        stub = controlplane_pb2_grpc.ControlPlaneStub(self._channels[name])
        try:
            reply = await stub.ListWorkers(cp.ListWorkersRequest(), timeout=ASK_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return False  # not serving (yet): not a leader anyone can use
        return bool(reply.leader)

    def since(self, moment: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= moment]

    async def first(
        self, predicate: Callable[[Sample], bool], after: float, timeout: float
    ) -> Sample | None:
        """The first sample taken after `after` that satisfies `predicate`, waiting at most
        `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            if found := next((s for s in self.since(after) if predicate(s)), None):
                return found
            if self._task is not None and self._task.done():
                raise BenchError(f"reading the election stopped: {self._task.exception()!r}")
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)

    async def serving_leader(self, after: float, timeout: float) -> tuple[str, int]:
        """The key's holder once exactly that replica says it leads."""
        found = await self.first(
            lambda s: s.holder is not None and s.leading == {s.holder[0]}, after, timeout
        )
        if found is None or found.holder is None:
            last = self.samples[-1] if self.samples else None
            raise BenchError(f"no leader served within {timeout:g} s; last sample: {last}")
        return found.holder


@dataclass(frozen=True)
class Renewal:
    at: float  # the midpoint of the two readings of the counter around it
    within: float  # ± this much
    count: float  # the counter once it was seen


class Renewals:
    """etcd's count of lease renewals, read from its /metrics (rendering it takes ~5 ms)."""

    def __init__(self, etcd: EtcdServer) -> None:
        self._url = f"http://{etcd.endpoint}/metrics"

    def _count(self) -> float:
        with urllib.request.urlopen(self._url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("etcd_debugging_lease_renewed_total "):
                    return float(line.rpartition(" ")[2])
        raise BenchError(f"{self._url} has no etcd_debugging_lease_renewed_total")

    async def read(self) -> tuple[float, float, float]:
        """The counter, and when the reading began and ended."""
        began = time.monotonic()
        count = await asyncio.to_thread(self._count)
        return count, began, time.monotonic()

    async def next(self, timeout: float) -> Renewal:
        """The next renewal, polled every RENEWAL_POLL_S for at most `timeout` seconds."""
        before, previous, _ = await self.read()
        deadline = previous + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(RENEWAL_POLL_S)
            count, began, ended = await self.read()
            if count > before:
                return Renewal((previous + ended) / 2, (ended - previous) / 2, count)
            previous = began
        raise BenchError(f"no lease was renewed within {timeout:g} s")
