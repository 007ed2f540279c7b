"""ComposerClient and AsyncComposerClient against a real composer, control plane, worker
and etcd: every method, plain Python values in and out, typed run events in order, and
server errors raised as modelyard.errors classes."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from rich.console import Console

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.client import Client
from modelyard.composer_client import (
    AsyncComposerClient,
    Chunk,
    ComposerClient,
    NodeFinished,
    NodeStarted,
    Result,
    RunEvent,
)
from modelyard.errors import InvalidArgument, NotFound
from modelyard.graph_builder import GraphBuilder
from modelyard.graph_spec import graph_from_dict
from modelyard.v1 import graph_pb2 as g
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.graph_output import print_run
from tests.integration.conftest import running_worker
from tests.support.graphs import ECHO_CHAIN as CHAIN

GHOST = {
    "name": "ghost",
    "inputs": {"x": "int"},
    "nodes": [{"name": "a", "model": "ghost", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}
BROKEN = {**CHAIN, "name": "broken", "outputs": {"x": "nowhere.x"}}


def ticks_graph() -> g.Graph:
    """ticker streams `n` ticks (10 ms apart) into echo, which is called on each."""
    b = GraphBuilder("ticks")
    count = b.input("n", "int")
    gen = b.model("gen", "ticker", count=count)
    each = b.model("each", "echo", tick=gen["tick"], stream="chunk")
    b.output("ticks", gen["ticks"])
    b.output("each", each["results"])  # a stream consumer's outputs: one per chunk
    return b.build()


@dataclass(frozen=True)
class Cluster:
    composer: str  # the composer's address
    worker: str  # the worker's address, for direct calls
    worker_id: str


@pytest_asyncio.fixture
async def cluster(etcd: EtcdServer) -> AsyncIterator[Cluster]:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "ticker", "class": "tests.support.models:Ticker"},
    ]
    async with running_worker(models, etcd=etcd.settings(), lease_ttl=2.0) as worker:
        composer = Composer(
            ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
        )
        await composer.start()
        await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
        for model in ("echo", "ticker"):  # registered and routable before a test starts
            assert await composer.routed.wait_for_endpoints(model, timeout=10)
        yield Cluster(composer.address, worker.address, worker.worker_id)
        await composer.stop()
    await plane.stop()


def check_chain_result(result: Result, worker_id: str) -> None:
    assert result.outputs == {"x": 41}
    assert [t.node for t in result.timeline] == ["a", "b"]
    assert all(t.status == "ok" and t.workers == (worker_id,) for t in result.timeline)
    a, b = result.timeline
    assert b.started_at >= a.started_at + a.duration  # b waited for a's output


def check_stream(events: Sequence[RunEvent], worker_id: str) -> None:
    """The order a user relies on: a node starts before its chunks and its finish, chunks
    come in index order, and the Result, once, comes last."""
    assert isinstance(events[0], NodeStarted)
    result = events[-1]
    assert isinstance(result, Result)
    assert result.outputs == {"ticks": 3, "each": [{"tick": i} for i in range(3)]}
    assert sum(isinstance(e, Result) for e in events) == 1
    for node in ("gen", "each"):
        mine = [e for e in events if getattr(e, "node", None) == node]
        assert isinstance(mine[0], NodeStarted) and isinstance(mine[-1], NodeFinished)
        chunks = [e for e in mine if isinstance(e, Chunk)]
        assert [(c.index, c.outputs) for c in chunks] == [(i, {"tick": i}) for i in range(3)]
        assert mine[-1].status == "ok" and mine[-1] in result.timeline
    for node in ("gen", "each"):  # the streamed-from node, too, names who streamed it
        finished = next(e for e in events if isinstance(e, NodeFinished) and e.node == node)
        assert finished.workers == (worker_id,)
    assert [type(e) for e in events if getattr(e, "node", None) == "gen"] == [
        NodeStarted, Chunk, Chunk, Chunk, NodeFinished,
    ]  # fmt: skip


async def test_the_async_client_deploys_validates_lists_gets_runs_and_deletes(
    cluster: Cluster,
) -> None:
    async with AsyncComposerClient(cluster.composer, timeout=30) as client:
        assert await client.deploy(CHAIN) == []  # echo is served: its signature was checked
        ghost = await client.validate(GHOST)
        assert ghost.ok and any("ghost" in warning for warning in ghost.warnings)
        broken = await client.validate(BROKEN)
        assert not broken.ok and any("nowhere" in error for error in broken.errors)
        with pytest.raises(InvalidArgument, match="nowhere"):
            await client.deploy(BROKEN)
        assert [graph.name for graph in await client.list()] == ["chain"]
        assert await client.get("chain") == graph_from_dict(CHAIN)
        check_chain_result(await client.run("chain", x=41), cluster.worker_id)
        check_chain_result(await client.run(CHAIN, {"x": 41}), cluster.worker_id)  # inline
        await client.delete("chain")
        assert await client.list() == []
        with pytest.raises(NotFound, match="chain"):
            await client.run("chain", x=41)


async def test_the_sync_client_deploys_validates_lists_gets_runs_and_deletes(
    cluster: Cluster,
) -> None:
    def scenario() -> None:
        with ComposerClient(cluster.composer, timeout=30) as client:
            assert client.deploy(graph_from_dict(CHAIN)) == []
            ghost = client.validate(GHOST)
            assert ghost.ok and any("ghost" in warning for warning in ghost.warnings)
            broken = client.validate(BROKEN)
            assert not broken.ok and any("nowhere" in error for error in broken.errors)
            with pytest.raises(InvalidArgument, match="nowhere"):
                client.deploy(BROKEN)
            assert [graph.name for graph in client.list()] == ["chain"]
            assert client.get("chain") == graph_from_dict(CHAIN)
            check_chain_result(client.run("chain", x=41), cluster.worker_id)
            check_chain_result(client.run(CHAIN, {"x": 41}), cluster.worker_id)
            client.delete("chain")
            assert client.list() == []
            with pytest.raises(NotFound, match="chain"):
                client.run("chain", x=41)

    await asyncio.to_thread(scenario)  # the servers run on this test's event loop


async def test_run_stream_yields_node_events_and_chunks_then_the_result(
    cluster: Cluster,
) -> None:
    async with AsyncComposerClient(cluster.composer, timeout=30) as client:
        await client.deploy(ticks_graph())
        check_stream([e async for e in client.run_stream("ticks", n=3)], cluster.worker_id)
        check_stream([e async for e in client.run_stream(ticks_graph(), n=3)], cluster.worker_id)

    def sync_stream() -> list[RunEvent]:
        with ComposerClient(cluster.composer, timeout=30) as client:
            return list(client.run_stream("ticks", n=3))

    check_stream(await asyncio.to_thread(sync_stream), cluster.worker_id)


async def test_leaving_a_run_stream_early_stops_the_run_and_the_workers_generation(
    cluster: Cluster,
) -> None:
    def leave_early() -> dict[str, Any]:
        with ComposerClient(cluster.composer, timeout=30) as composer:
            for event in composer.run_stream(ticks_graph(), n=6000):  # a minute of ticks
                if isinstance(event, Chunk) and event.node == "each":
                    break  # the generation is under way and flowing downstream
            # still connected: only leaving the loop can have stopped the run. The worker
            # runs one stream per model thread: had the generation gone on (until the
            # run's 30 s deadline at least), this call would miss its 15 s one.
            with Client(cluster.worker) as worker:
                return worker.predict("ticker", count=1, timeout=15).outputs

    assert await asyncio.to_thread(leave_early) == {"ticks": 1}


async def test_a_failed_node_names_the_worker_that_refused_it(cluster: Cluster) -> None:
    # a string where ticker takes an integer: the worker refuses the call
    graph = {
        "name": "refused",
        "inputs": {"n": "string"},
        "nodes": [{"name": "t", "model": "ticker", "inputs": {"count": "inputs.n"}}],
        "outputs": {"ticks": "t.ticks"},
    }
    events: list[RunEvent] = []

    async def run() -> None:
        async with AsyncComposerClient(cluster.composer, timeout=30) as client:
            async for event in client.run_stream(graph, n="three"):
                events.append(event)

    with pytest.raises(InvalidArgument, match=r"^node 't': input 'count' must be an integer"):
        await run()
    finished = [(e.node, e.status, e.workers) for e in events if isinstance(e, NodeFinished)]
    assert finished == [("t", "failed", (cluster.worker_id,))]


async def test_an_unknown_graph_is_not_found_for_every_call(cluster: Cluster) -> None:
    async with AsyncComposerClient(cluster.composer, timeout=30) as client:
        with pytest.raises(NotFound, match="nope"):
            await client.run("nope")
        with pytest.raises(NotFound, match="nope"):
            [e async for e in client.run_stream("nope")]
        with pytest.raises(NotFound, match="nope"):
            await client.get("nope")
        with pytest.raises(NotFound, match="nope"):
            await client.delete("nope")

    def sync_calls() -> None:
        with ComposerClient(cluster.composer, timeout=30) as client:
            with pytest.raises(NotFound, match="nope"):
                client.run("nope")
            with pytest.raises(NotFound, match="nope"):
                list(client.run_stream("nope"))
            with pytest.raises(NotFound, match="nope"):
                client.get("nope")
            with pytest.raises(NotFound, match="nope"):
                client.delete("nope")

    await asyncio.to_thread(sync_calls)


def test_a_malformed_graph_mapping_is_refused_before_any_call() -> None:
    # nothing listens on port 1: the error must come from the client, naming the bad key
    with (
        ComposerClient("127.0.0.1:1", timeout=5) as client,
        pytest.raises(InvalidArgument, match="did you mean 'inputs'"),
    ):
        client.deploy({**CHAIN, "input": {"x": "int"}})


async def test_modelyard_run_prints_node_events_chunks_and_the_outputs(
    cluster: Cluster,
) -> None:
    async with AsyncComposerClient(cluster.composer, timeout=30) as client:
        await client.deploy(ticks_graph())
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    code = await asyncio.to_thread(print_run, cluster.composer, "ticks", {"n": 3}, console)
    assert code == 0
    text = out.getvalue()
    assert "▶ gen" in text and "✓ gen" in text and "✓ each" in text
    printed: dict[str, list[str]] = {}  # node -> the chunks printed after "node ⇢"
    for node, chunks in re.findall(r"(\w+) ⇢ (.*)", text):
        printed.setdefault(node, []).extend(re.findall(r'\{"tick": (\d+)\}', chunks))
    assert printed == {"gen": ["0", "1", "2"], "each": ["0", "1", "2"]}  # once, in order
    assert '"ticks": 3' in text and "timeline" in text
    missing = io.StringIO()
    console = Console(file=missing, width=120, color_system=None)
    assert await asyncio.to_thread(print_run, cluster.composer, "nope", {}, console) == 1
    assert "NOT_FOUND" in missing.getvalue()
