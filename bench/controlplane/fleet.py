"""A fleet of fake workers (bench/controlplane/fake_workers.py) and timed changes to it.

A change is a fake's registration deleted and put back under its own lease, or its
model's health flipped to NOT_SERVING and back inside the fake; each is timed from when
it took effect until the subscriber's endpoint set reflects it.
"""

from __future__ import annotations

import asyncio
import functools
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.children import Child, spawn
from bench.common.stats import latency_summary
from bench.controlplane.follower import SetFollower
from modelyard_server.etcd import Keys

MODEL = "fleet"
TTL_S = 30  # lease TTL of a fake: keep-alives cost ~1,000 / 10 s, not 1,000 / 0.7 s
CHANGE_TIMEOUT_S = 5.0
CHANGE_PAUSE_S = 0.02  # changes arrive one at a time, as an operator's or a crash's would
KEYS = Keys()


@dataclass
class Fleet:
    """The fake-worker processes and who lives where."""

    children: list[Child]
    owner: dict[str, Child] = field(default_factory=dict)
    lease: dict[str, int] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.owner)

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.children))


async def start_fleet(etcd_endpoint: str, size: int, processes: int, workdir: Path) -> Fleet:
    per = size // processes
    children = []
    for index in range(processes):
        argv = [sys.executable, "-m", "bench.controlplane.fake_workers", "--etcd", etcd_endpoint,
                "--first", str(index * per), "--count", str(per), "--model", MODEL,
                "--ttl", str(TTL_S)]  # fmt: skip
        children.append(await spawn(f"fakes-{index}", argv, workdir))
    fleet = Fleet(children)
    try:
        readies = await asyncio.gather(*(c.next_event("ready", 120.0) for c in children))
    except BaseException:
        await fleet.stop()
        raise
    for child, ready in zip(children, readies, strict=True):
        for fake in ready["fakes"]:
            fleet.owner[fake["worker_id"]] = child
            fleet.lease[fake["worker_id"]] = int(fake["lease"])
    return fleet


@dataclass
class Change:
    kind: str  # delete | put | not_serving | serving
    worker_id: str
    latency_ms: float | None  # None: the set did not reflect it within CHANGE_TIMEOUT_S
    at: float  # time.monotonic() when it took effect


async def timed_change(
    follower: SetFollower,
    kind: str,
    worker_id: str,
    present: bool,
    act: Callable[[], Awaitable[float | None]],
) -> Change:
    """Makes one change and times it until the first set that reflects it arrives.

    `act` returns when the change took effect if it knows (a fake stamps its health
    flip), else None: then the clock starts before the etcd request, so its round trip
    (about a millisecond) counts against the control plane, never for it.
    """
    mark = follower.mark()
    began = time.monotonic()
    effective = await act() or began
    arrival = await follower.wait_for(
        lambda ids: (worker_id in ids) == present, mark, CHANGE_TIMEOUT_S
    )
    latency = (arrival.at - effective) * 1000.0 if arrival else None
    return Change(kind, worker_id, latency, effective)


async def etcd_delete(client: Any, key: bytes) -> None:
    await client.delete(key)


async def etcd_put(client: Any, key: bytes, value: bytes, lease: int) -> None:
    await client.put(key, value, lease=lease)


async def registration_changes(
    follower: SetFollower, client: Any, fleet: Fleet, victims: list[str], stop_at: float
) -> list[Change]:
    """Deletes each victim's key and puts it back under the fake's own lease."""
    changes = []
    for worker_id in victims:
        if time.monotonic() >= stop_at:
            break
        key = KEYS.worker(worker_id)
        value = (await client.get(key)).value
        delete = functools.partial(etcd_delete, client, key)
        put = functools.partial(etcd_put, client, key, value, fleet.lease[worker_id])
        changes.append(await timed_change(follower, "delete", worker_id, False, delete))
        await asyncio.sleep(CHANGE_PAUSE_S)
        changes.append(await timed_change(follower, "put", worker_id, True, put))
        await asyncio.sleep(CHANGE_PAUSE_S)
    return changes


async def flip_health(child: Child, worker_id: str, serving: bool) -> float:
    """Has the fake flip its model's health; when it did (its own monotonic stamp)."""
    await child.send({"op": "health", "worker_id": worker_id, "serving": serving})
    done = await child.next_event("health", CHANGE_TIMEOUT_S)
    return float(done["at"])


async def health_changes(
    follower: SetFollower, fleet: Fleet, victims: list[str], stop_at: float
) -> list[Change]:
    """Flips each victim's model NOT_SERVING, then SERVING again, inside the fake."""
    changes = []
    for worker_id in victims:
        if time.monotonic() >= stop_at:
            break
        for serving in (False, True):
            flip = functools.partial(flip_health, fleet.owner[worker_id], worker_id, serving)
            kind = "serving" if serving else "not_serving"
            changes.append(await timed_change(follower, kind, worker_id, serving, flip))
            await asyncio.sleep(CHANGE_PAUSE_S)
    return changes


def change_summary(changes: list[Change]) -> dict[str, Any]:
    seen = [c.latency_ms for c in changes if c.latency_ms is not None]
    return {**latency_summary(seen), "missed": len(changes) - len(seen)}


async def churn(
    follower: SetFollower,
    client: Any,
    fleet: Fleet,
    rng: random.Random,
    pairs: tuple[int, int],
    cap_s: float,
) -> dict[str, list[Change]]:
    """`pairs` = (registration pairs, health pairs), on distinct random fakes; no new change
    starts after `cap_s` (a struggling control plane ends the phase early, not late)."""
    victims = rng.sample(fleet.ids, pairs[0] + pairs[1])
    stop_at = time.monotonic() + cap_s
    registration = victims[: pairs[0]]
    return {
        "registration": await registration_changes(follower, client, fleet, registration, stop_at),
        "health": await health_changes(follower, fleet, victims[pairs[0] :], stop_at),
    }
