"""Light stand-ins for workers, many per process, to load the control plane with a big fleet.

A fake is what the control plane sees of a worker and nothing more: a WorkerInfo key in
etcd bound to its own lease (kept alive), and a grpc.health.v1 service on its own address
("" and the model, both SERVING). It serves no Predict and no WorkerLoad; the control plane
tolerates the UNIMPLEMENTED load feed and balances on nothing for it.

Why one grpc.aio server per fake: the control plane keys workers by address and probes
each address, and flipping one fake's health must not flip its neighbours'. One server
listening on many ports cannot tell which port a call came in on (a servicer sees the
peer, not the local address), so its health service would be shared. grpc.aio servers in
one process share the process's completion queue and poller thread, so a server costs
about 30 KB and 0.6 ms to start (measured: 1,000 in 0.6 s and 30 MB; idle, no CPU).

    python -m bench.controlplane.fake_workers --etcd 127.0.0.1:2379 --first 0 --count 250

Protocol (JSON lines). On stdout, once every fake is registered:
    {"event": "ready", "fakes": [{"worker_id", "address", "lease"}, ...]}
On stdin, one command a line; each is answered on stdout:
    {"op": "health", "worker_id": "fake-0007", "serving": false}
        -> {"event": "health", "worker_id": "fake-0007", "serving": false, "at": <monotonic>}
End of stdin (or SIGTERM) revokes every lease and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelyard_server.etcd import EtcdClient, EtcdSettings, Keys
from modelyard_server.workerinfo import ModelInfo, WorkerInfo

HOST = "127.0.0.1"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Registrations run this many at a time: fast, without one burst of 250 puts per process.
REGISTER_CONCURRENCY = 25


@dataclass
class Fake:
    worker_id: str
    model: str
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int = 0
    lease: Any = None  # aetcd.Lease

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.worker_id,
            address=self.address,
            models=(ModelInfo(name=self.model, task="fake"),),
            tags={"device": "cpu", "fleet": "fake"},
            started_at=time.time(),
        )

    async def set_serving(self, serving: bool) -> None:
        await self.health.set(self.model, SERVING if serving else NOT_SERVING)


async def start_fake(worker_id: str, model: str) -> Fake:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    fake = Fake(worker_id, model, server, servicer)
    fake.port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    await servicer.set("", SERVING)
    await fake.set_serving(True)
    return fake


class Fleet:
    """The fakes of this process, their registrations and their lease keep-alive."""

    def __init__(self, client: EtcdClient, keys: Keys, ttl: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self.fakes: dict[str, Fake] = {}

    async def start(self, ids: list[str], model: str) -> None:
        for worker_id in ids:
            self.fakes[worker_id] = await start_fake(worker_id, model)
        gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
        await asyncio.gather(*(self._register(fake, gate) for fake in self.fakes.values()))

    async def _register(self, fake: Fake, gate: asyncio.Semaphore) -> None:
        async with gate:
            fake.lease = await self.client.lease(self.ttl)
            await self.client.put(
                self.keys.worker(fake.worker_id), fake.info().to_json(), lease=fake.lease
            )

    async def keep_alive(self) -> None:
        """Refreshes every lease once per ttl/3, spread evenly over that period (etcd's
        clients do the same over one stream; a few dozen refreshes a second are cheap)."""
        period = self.ttl / 3.0
        while True:
            for fake in list(self.fakes.values()):
                await asyncio.sleep(period / max(1, len(self.fakes)))
                with contextlib.suppress(Exception):  # etcd busy: the next round retries
                    await asyncio.wait_for(fake.lease.refresh(), period)

    async def stop(self) -> None:
        for fake in self.fakes.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fake.lease.revoke(), 2.0)
        await asyncio.gather(*(fake.server.stop(None) for fake in self.fakes.values()))

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"worker_id": f.worker_id, "address": f.address, "lease": int(f.lease.id)}
            for f in self.fakes.values()
        ]


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def follow_commands(fleet: Fleet) -> None:
    """Applies stdin commands until end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("op") == "health":
            fake = fleet.fakes[command["worker_id"]]
            serving = bool(command["serving"])
            await fake.set_serving(serving)
            # stamped after the health service took the new status: the change is live
            emit({"event": "health", "worker_id": fake.worker_id, "serving": serving,
                  "at": time.monotonic()})  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    client = EtcdClient(EtcdSettings(endpoints=[args.etcd], prefix=args.prefix))
    fleet = Fleet(client, Keys(args.prefix), args.ttl)
    ids = [f"{args.id_prefix}-{i:04d}" for i in range(args.first, args.first + args.count)]
    await fleet.start(ids, args.model)
    keeper = asyncio.create_task(fleet.keep_alive())
    emit({"event": "ready", "fakes": fleet.describe()})
    commands = asyncio.create_task(follow_commands(fleet))
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await asyncio.wait(
        {commands, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    keeper.cancel()
    await fleet.stop()
    await client.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--etcd", required=True, help="host:port of etcd")
    parser.add_argument("--prefix", default="/modelyard")
    parser.add_argument("--first", type=int, default=0, help="index of the first fake")
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--model", default="fleet")
    parser.add_argument("--id-prefix", default="fake")
    parser.add_argument("--ttl", type=int, default=30, help="lease TTL in seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
