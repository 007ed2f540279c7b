"""Rescue of calls sent to a replica that stopped answering, against real gRPC servers on
127.0.0.1: a real worker, and a hung replica that takes calls and never answers (as a
SIGSTOPped process does: the connection stays open, nothing comes back).

Time is on a `FakeClock` wherever it decides something (a derived attempt timeout), and
every wait for an effect polls with a generous deadline; tests/e2e/test_hung_replica.py
does the same with real processes and SIGSTOP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from modelyard.endpoints import Endpoint
from modelyard.rescue import AttemptTimeouts
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc
from tests.helpers import eventually
from tests.integration.test_routed_client import (
    MODELS,
    FakeControlPlane,
    calls,
    control_plane,
    endpoint,
    routed_client,
)
from tests.support.clock import FakeClock
from workers.server import Worker
from workers.settings import WorkerSettings

Context = grpc.aio.ServicerContext[Any, Any]
HUNG = "h"  # sorts before "w0": round robin tries the hung replica first


class HungReplica(predict_pb2_grpc.PredictServicer):
    """Takes every call and never answers; counts the calls and their cancellations. With
    `answers` set it answers every Predict (echoing its inputs) but those with x="hang": a
    replica that is alive with one very slow call."""

    def __init__(self) -> None:
        self.taken = 0
        self.cancelled = 0
        self.answers = False

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        if self.answers and request.inputs["x"].string_value != "hang":
            return pb.PredictResponse(model=request.model, outputs=request.inputs)
        await self._hang()
        raise AssertionError("unreachable")

    async def PredictStream(
        self, request: pb.PredictStreamRequest, context: Context
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        await self._hang()
        yield pb.PredictStreamResponse()

    # the rest of the service is not this fake's business
    async def PredictMany(self, request_iterator: Any, context: Context) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def ListModels(self, request: Any, context: Context) -> pb.ListModelsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def GetModelMetadata(self, request: Any, context: Context) -> pb.GetModelMetadataResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def _hang(self) -> None:
        self.taken += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@contextlib.asynccontextmanager
async def hung_replica() -> AsyncIterator[tuple[HungReplica, str]]:
    servicer = HungReplica()
    server = grpc.aio.server()
    predict_pb2_grpc.add_PredictServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


Setup = tuple[FakeControlPlane, str, Worker, HungReplica, str]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=MODELS, grace_seconds=0.1))
    await worker.start()
    plane = FakeControlPlane()
    try:
        async with hung_replica() as (hung, hung_address), control_plane(plane) as (_, address):
            yield plane, address, worker, hung, hung_address
    finally:
        await worker.stop()


def both(setup: Setup) -> list[Endpoint]:
    """The hung replica and the working one, as the control plane lists them."""
    _, _, worker, _, hung_address = setup
    return [Endpoint(HUNG, hung_address), endpoint(worker, "w0")]


async def test_a_call_on_a_replica_that_leaves_the_set_is_retried_elsewhere(
    setup: Setup,
) -> None:
    plane, address, worker, hung, _ = setup
    plane.publish("echo", both(setup))
    async with routed_client(address, policy="round_robin") as client:
        call = asyncio.create_task(client.predict("echo", x=1))
        await eventually(lambda: hung.taken == 1, timeout=10)
        assert not call.done()
        plane.publish("echo", [endpoint(worker, "w0")])  # the prober gave up on it
        result = await asyncio.wait_for(call, timeout=10)
    assert result.outputs == {"x": 1} and result.worker == "w0"
    assert calls(worker, "echo") == 1
    await eventually(lambda: hung.cancelled == 1, timeout=10)  # its work is called off


async def test_a_stream_waiting_for_its_first_message_is_retried_elsewhere(
    setup: Setup,
) -> None:
    plane, address, worker, hung, _ = setup
    plane.publish("ticker", both(setup))
    async with routed_client(address, policy="round_robin") as client:

        async def read() -> list[Any]:
            return [e async for e in client.predict_stream("ticker", count=2)]

        stream = asyncio.create_task(read())
        await eventually(lambda: hung.taken == 1, timeout=10)
        plane.publish("ticker", [endpoint(worker, "w0")])
        events = await asyncio.wait_for(stream, timeout=10)
    assert [e.worker for e in events] == ["w0"] * 3 and events[-1].outputs == {"ticks": 2}
    await eventually(lambda: hung.cancelled == 1, timeout=10)


async def test_a_stream_that_has_delivered_is_never_cut_off_by_the_set(setup: Setup) -> None:
    plane, address, worker, _, hung_address = setup
    plane.publish("ticker", [endpoint(worker, "w0"), Endpoint("w1", hung_address)])
    async with routed_client(address, policy="round_robin") as client:
        stream = client.predict_stream("ticker", count=3, parameters={"interval_ms": 50})
        events = [await anext(stream)]
        plane.publish("ticker", [Endpoint("w1", hung_address)])  # w0 leaves mid-stream
        await eventually(lambda: [e.worker_id for e in client.endpoints("ticker")] == ["w1"])
        events += [e async for e in stream]
    assert [e.worker for e in events] == ["w0"] * 4 and events[-1].outputs == {"ticks": 3}


async def test_an_unanswered_call_is_abandoned_after_the_derived_timeout(setup: Setup) -> None:
    plane, address, worker, hung, _ = setup
    plane.publish("echo", [endpoint(worker, "w0")])
    clock = FakeClock()
    timeouts = AttemptTimeouts(min_samples=3, floor_s=1.0)
    async with routed_client(
        address, policy="round_robin", clock=clock, attempt_timeouts=timeouts
    ) as client:
        for i in range(3):  # three answers: the derived timeout is the floor, 1 s
            await client.predict("echo", x=i)
        plane.publish("echo", both(setup))
        await eventually(lambda: len(client.endpoints("echo")) == 2)
        call = asyncio.create_task(client.predict("echo", x=9))
        await eventually(lambda: hung.taken == 1, timeout=10)
        await clock.advance(0.9)
        assert not call.done()
        await clock.advance(0.1)
        result = await asyncio.wait_for(call, timeout=10)
        assert result.outputs == {"x": 9} and result.worker == "w0"
        # the hung replica is ejected: the next calls do not wait on it again
        for i in range(4):
            assert (await asyncio.wait_for(client.predict("echo", x=i), timeout=10)).worker == "w0"
    assert hung.taken == 1


async def test_no_timeout_is_derived_from_too_few_answers_or_without_another_replica(
    setup: Setup,
) -> None:
    plane, address, worker, hung, hung_address = setup
    clock = FakeClock()
    timeouts = AttemptTimeouts(min_samples=3, floor_s=1.0)
    plane.publish("echo", [endpoint(worker, "w0")])
    plane.publish("slow", [Endpoint(HUNG, hung_address)])
    async with routed_client(
        address, policy="round_robin", clock=clock, attempt_timeouts=timeouts
    ) as client:
        for i in range(3):
            await client.predict("echo", x=i)
        plane.publish("echo", [Endpoint(HUNG, hung_address)])  # the only replica left
        await eventually(lambda: [e.worker_id for e in client.endpoints("echo")] == [HUNG])
        alone = asyncio.create_task(client.predict("echo", x=9))
        # a model with no answers yet: nothing to derive a timeout from
        unknown = asyncio.create_task(client.predict("slow", x=9))
        await eventually(lambda: hung.taken == 2, timeout=10)
        await clock.advance(9.0)  # far past the 1 s floor, short of the 10 s deadline
        await asyncio.sleep(0.05)
        assert not alone.done() and not unknown.done()
        assert hung.taken == 2 and hung.cancelled == 0
        alone.cancel()
        unknown.cancel()
        await asyncio.gather(alone, unknown, return_exceptions=True)


async def test_rescue_can_be_turned_off(setup: Setup) -> None:
    plane, address, worker, hung, _ = setup
    plane.publish("echo", both(setup))
    async with routed_client(address, policy="round_robin", rescue=False) as client:
        call = asyncio.create_task(client.predict("echo", x=1))
        await eventually(lambda: hung.taken == 1, timeout=10)
        plane.publish("echo", [endpoint(worker, "w0")])
        await eventually(lambda: len(client.endpoints("echo")) == 1)
        await asyncio.sleep(0.2)
        assert not call.done()  # it waits out its deadline, as before rescue existed
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)


async def test_a_slow_call_on_a_replica_that_keeps_answering_is_not_abandoned(
    setup: Setup,
) -> None:
    plane, address, _, hung, _ = setup
    hung.answers = True
    plane.publish("echo", both(setup))
    clock = FakeClock()
    timeouts = AttemptTimeouts(min_samples=3, floor_s=1.0)
    async with routed_client(
        address, policy="round_robin", clock=clock, attempt_timeouts=timeouts
    ) as client:
        # round robin: h, w0, h, w0, then the slow call on h, then w0, h, w0, h, ...
        answered = [(await client.predict("echo", x=str(i))).worker for i in range(4)]
        assert answered == [HUNG, "w0", HUNG, "w0"]
        slow = asyncio.create_task(client.predict("echo", x="hang"))
        await eventually(lambda: hung.taken == 1, timeout=10)
        for i in range(3):  # h answers another call every 0.9 s: it is alive
            await clock.advance(0.9)
            assert (await client.predict("echo", x="w")).worker == "w0"
            assert (await client.predict("echo", x=str(i))).worker == HUNG
        assert not slow.done() and hung.cancelled == 0  # 2.7 s, over the 1 s timeout
        await clock.advance(1.0)  # and now 1 s without a word from h
        result = await asyncio.wait_for(slow, timeout=10)
    assert result.worker == "w0" and hung.cancelled == 1


async def test_a_call_is_abandoned_for_silence_once_at_most(setup: Setup) -> None:
    plane, address, worker, hung, hung_address = setup
    plane.publish("echo", [endpoint(worker, "w0")])
    clock = FakeClock()
    timeouts = AttemptTimeouts(min_samples=3, floor_s=1.0)
    async with routed_client(
        address, policy="round_robin", clock=clock, attempt_timeouts=timeouts
    ) as client:
        for i in range(3):
            await client.predict("echo", x=i)
        # two hung replicas, and the working one: the call meets both hung ones first
        hung_ones = [Endpoint(HUNG, hung_address), Endpoint("h2", hung_address)]
        plane.publish("echo", [*hung_ones, endpoint(worker, "w0")])
        await eventually(lambda: len(client.endpoints("echo")) == 3)
        call = asyncio.create_task(client.predict("echo", x=9))
        await eventually(lambda: hung.taken == 1, timeout=10)
        await clock.advance(1.0)  # abandoned on h, sent to h2
        await eventually(lambda: hung.taken == 2, timeout=10)
        await clock.advance(8.0)  # what was slow once may be slow again: it waits on
        await asyncio.sleep(0.05)
        assert not call.done() and hung.cancelled == 1
        plane.publish("echo", [Endpoint(HUNG, hung_address), endpoint(worker, "w0")])
        result = await asyncio.wait_for(call, timeout=10)  # h2 left the set: rescued
    assert result.worker == "w0" and hung.cancelled == 2


async def test_a_hedged_call_is_answered_by_the_second_replica_and_the_first_called_off(
    setup: Setup,
) -> None:
    plane, address, worker, hung, _ = setup
    plane.publish("echo", both(setup))
    clock = FakeClock()
    async with routed_client(address, policy="round_robin", clock=clock, rescue=False) as client:
        call = asyncio.create_task(client.predict("echo", x=1, hedge_after=0.5))
        await eventually(lambda: hung.taken == 1, timeout=10)
        await clock.advance(0.4)
        await asyncio.sleep(0.05)
        assert not call.done() and calls(worker, "echo") == 0
        await clock.advance(0.1)  # no answer after 0.5 s: a second attempt, on w0
        result = await asyncio.wait_for(call, timeout=10)
        assert result.outputs == {"x": 1} and result.worker == "w0"
        await eventually(lambda: hung.cancelled == 1, timeout=10)
        # a hedge is not a refusal: the slow replica is not ejected, its turn comes again
        again = asyncio.create_task(client.predict("echo", x=2, hedge_after=0.5))
        await eventually(lambda: hung.taken == 2, timeout=10)
        await clock.advance(0.5)
        assert (await asyncio.wait_for(again, timeout=10)).worker == "w0"
