"""A composer with no `max_runs_in_flight` sizes its admission limit from the workers'
capacity, through the real pieces: a real etcd, a control plane, two `modelyard worker`
processes whose gated model serves 2 and 1 calls at once (its batch size), and a composer
that learns those figures from the endpoint sets. It admits 1.5 x 3 = 5 runs, rounded up,
and refuses the next ones at once with RESOURCE_EXHAUSTED (OVERLOADED) and a retry hint.
A composer started later, with the graph already deployed, has the same limit before any
run has asked for the model. The runs wait at a gate, so nothing depends on how fast the
host is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from composer.admission_limit import FLOOR
from composer.server import Composer
from composer.settings import ComposerSettings
from composer.spec import graph_from_dict
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.errors import ResourceExhausted, from_rpc_error
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from modelyard_cli.etcd_server import EtcdServer
from tests.helpers import eventually
from tests.integration.conftest import worker_process, write_config
from tests.support.models import Gate

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Each worker's batch size for the gated model: the calls of it that worker serves at once.
CAPACITY = {"cap-a": 2, "cap-b": 1}
SIZED = 5  # ceil(1.5 x (2 + 1))
#: How long a step may take on a busy host (a worker process starts in seconds); within
#: the test's own timeout, so a step that never happens fails with its own message.
PATIENCE = 60.0
HELD = {
    "name": "held",
    "inputs": {"x": "string"},
    "nodes": [{"name": "a", "model": "gated", "inputs": {"x": "inputs.x"}}],
    "outputs": {"x": "a.x"},
}


@dataclass
class Stack:
    composer: Composer
    stub: composer_pb2_grpc.ComposerAsyncStub
    gate: Gate
    etcd: EtcdServer
    folder: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    folder = tmp_path_factory.mktemp("sized-admission")
    gate = Gate(folder / "open")
    with EtcdServer() as etcd:
        plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
        await plane.start()
        composer = Composer(
            ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
        )
        await composer.start()
        await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
        channel = grpc.aio.insecure_channel(composer.address)
        try:
            yield Stack(composer, composer_pb2_grpc.ComposerStub(channel), gate, etcd, folder)
        finally:
            gate.open()  # a failed test must not leave the workers' model threads waiting
            await channel.close()
            await composer.stop()
            await plane.stop()


@contextlib.contextmanager
def worker(stack: Stack, worker_id: str) -> Iterator[None]:
    model = {
        "name": "gated",
        "class": "tests.support.models:Gated",
        "batching": {"max_batch_size": CAPACITY[worker_id]},
        "options": {"predict_gate": str(stack.gate)},
    }
    config = write_config(
        stack.folder / f"{worker_id}.yaml",
        [model],
        worker_id=worker_id,
        etcd={"endpoints": [stack.etcd.endpoint]},
    )
    with worker_process(config):
        yield


def _run(x: str) -> pb.RunRequest:
    request = pb.RunRequest(name="held")
    fill_value_map(request.inputs, {"x": x})
    return request


async def test_the_limit_is_sized_from_the_workers_capacity_and_refuses_past_it(
    stack: Stack,
) -> None:
    composer = stack.composer
    assert composer.admission.limit == FLOOR  # no endpoint set yet: the floor still admits

    def capacities() -> dict[str, int]:
        return {e.worker_id: e.capacity for e in composer.routed.endpoints("gated")}

    with worker(stack, "cap-a"):
        # deploying validates against the replicas, so the composer watches "gated" from now
        await stack.stub.DeployGraph(pb.DeployGraphRequest(graph=graph_from_dict(HELD)))
        await eventually(lambda: capacities() == {"cap-a": 2}, timeout=PATIENCE)
        assert composer.admission.limit == 3  # 1.5 x 2
        with worker(stack, "cap-b"):
            await eventually(lambda: capacities() == CAPACITY, timeout=PATIENCE)
            assert composer.admission.limit == SIZED
            await _admits_the_sized_limit_and_refuses_past_it(stack)
            await _a_composer_started_later_is_sized_before_its_first_run(stack)


async def _admits_the_sized_limit_and_refuses_past_it(stack: Stack) -> None:
    composer = stack.composer

    async def run(x: str) -> pb.RunResponse:
        return await stack.stub.Run(_run(x), timeout=PATIENCE)

    admitted = [asyncio.create_task(run(str(i))) for i in range(SIZED)]
    await eventually(lambda: composer.admission.in_flight == SIZED, timeout=PATIENCE)
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.Run(_run("refused"), timeout=PATIENCE)
        refused = from_rpc_error(caught.value)
        assert isinstance(refused, ResourceExhausted)
        assert (refused.reason, refused.metadata["limit"]) == ("OVERLOADED", str(SIZED))
        trailers = dict(caught.value.trailing_metadata() or ())
        assert int(trailers["grpc-retry-pushback-ms"]) > 0  # the retry hint

    stack.gate.open()
    results = await asyncio.gather(*admitted)
    assert [from_value_map(r.outputs)["x"] for r in results] == [str(i) for i in range(SIZED)]
    await eventually(lambda: composer.admission.in_flight == 0, timeout=PATIENCE)


async def _a_composer_started_later_is_sized_before_its_first_run(stack: Stack) -> None:
    settings = stack.composer.settings
    later = Composer(
        ComposerSettings(port=0, etcd=settings.etcd, controlplanes=settings.controlplanes)
    )
    await later.start()
    try:
        # it opens the deployed graph's routes at start: no run has to come first
        await eventually(lambda: later.admission.limit == SIZED, timeout=PATIENCE)
        assert later.admission.in_flight == 0
    finally:
        await later.stop()
