"""PredictMany through a real worker and real channels: many Predict calls as messages of
one stream, answered as unary Predict answers them, errors, deadlines and shutdown included
(`workers.predict_many`, `modelyard.multiplex`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.channels import bearer
from modelyard.client import build_request
from modelyard.composer_client import AsyncComposerClient
from modelyard.errors import from_rpc_error
from modelyard.multiplex import MAX_STREAMS, MultiplexedStub, PredictMany
from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc
from modelyard.values import from_value_map
from modelyard_cli.etcd_server import EtcdServer
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.graphs import ECHO_CHAIN as CHAIN
from tests.support.models import Gate
from workers.server import Worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

METHOD = "/modelyard.v1.Predict/PredictMany"
LIMIT = 1024 * 1024


def models(gate: Gate) -> list[dict[str, Any]]:
    return [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "picky", "class": "tests.support.models:Picky"},
        {
            "name": "gated",
            "class": "tests.support.models:Gated",
            "options": {"predict_gate": str(gate)},
        },
    ]


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(tmp_path_factory.mktemp("gates") / "gated")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(gate: Gate) -> AsyncIterator[Worker]:
    async with running_worker(models(gate), max_message_bytes=256 * 1024) as w:
        try:
            yield w
        finally:
            gate.open()


@pytest_asyncio.fixture(loop_scope="module")
async def channel(worker: Worker) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(worker.address) as ch:
        yield ch


def request(model: str, **inputs: Any) -> pb.PredictRequest:
    return build_request(pb.PredictRequest, model, inputs, None)


def many(channel: grpc.aio.Channel, **options: Any) -> PredictMany:
    return PredictMany(predict_pb2_grpc.PredictStub(channel), max_receive_bytes=LIMIT, **options)


async def answer_of(call: Any, timeout: float) -> pb.PredictManyResponse:
    """The next answer on a raw PredictMany call."""
    answer = await asyncio.wait_for(call.read(), timeout)
    assert isinstance(answer, pb.PredictManyResponse)
    return answer


def served(worker: Worker, model: str, code: str) -> float:
    value = worker.telemetry.registry.get_sample_value(
        "modelyard_worker_requests_total", {"method": METHOD, "model": model, "code": code}
    )
    return value or 0.0


async def test_calls_on_one_stream_are_answered_as_unary_predict_answers_them(
    worker: Worker, channel: grpc.aio.Channel
) -> None:
    stream = many(channel)
    before = served(worker, "echo", "OK")
    answers = await asyncio.gather(
        *(stream.predict(request("echo", text=f"call {i}", n=i), 5.0) for i in range(30))
    )
    assert [from_value_map(a.outputs, "outputs") for a in answers] == [
        {"text": f"call {i}", "n": i} for i in range(30)
    ]
    unary = await predict_pb2_grpc.PredictStub(channel).Predict(request("echo", text="x"))
    assert await stream.predict(request("echo", text="x"), 5.0) == unary
    # counted by the worker's request metrics, by model and code, as PredictMany
    assert served(worker, "echo", "OK") == before + 31


async def test_a_quick_call_is_answered_while_a_slow_one_on_the_same_stream_waits(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    stream = many(channel)
    slow = asyncio.ensure_future(stream.predict(request("gated", x=1), 30.0))
    quick = await stream.predict(request("echo", text="first back"), 5.0)
    assert from_value_map(quick.outputs, "outputs") == {"text": "first back"}
    assert not slow.done()
    gate.open()
    assert from_value_map((await slow).outputs, "outputs")["x"] == 1
    gate.path.unlink()


async def test_calls_in_flight_together_spread_over_a_few_streams(
    worker: Worker, channel: grpc.aio.Channel, gate: Gate
) -> None:
    streams = worker.predict_servicer.many
    await eventually(lambda: streams.open_streams == 0)  # earlier tests' channels are closed
    stream = many(channel)
    held = [asyncio.ensure_future(stream.predict(request("gated", x=i), 30.0)) for i in range(9)]
    await eventually(lambda: worker.service.in_flight == 9)
    assert streams.open_streams == MAX_STREAMS
    # and a quiet stream takes the next call
    assert (await stream.predict(request("echo", text="meanwhile"), 5.0)).outputs
    assert streams.open_streams == MAX_STREAMS
    gate.open()
    answers = await asyncio.gather(*held)
    assert [from_value_map(a.outputs, "outputs")["x"] for a in answers] == list(range(9))
    gate.path.unlink()


@pytest.mark.parametrize(
    "wrong",
    [request("no-such-model", text="hi"), request("picky", text=""), request("picky", text="boom")],
    ids=["unknown model", "refused by the model", "a bug in the model"],
)
async def test_a_failed_call_gets_the_status_a_unary_call_gets_and_the_stream_goes_on(
    channel: grpc.aio.Channel, wrong: pb.PredictRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await predict_pb2_grpc.PredictStub(channel).Predict(wrong)
    stream = many(channel)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await stream.predict(wrong, 5.0)
    assert streamed.value.code() == unary.value.code()
    assert streamed.value.details() == unary.value.details()
    expected, got = from_rpc_error(unary.value), from_rpc_error(streamed.value)
    assert (got.reason, got.field_violations, got.resource) == (
        expected.reason,
        expected.field_violations,
        expected.resource,
    )
    assert (await stream.predict(request("echo", text="still here"), 5.0)).outputs


async def test_a_call_past_its_deadline_fails_deadline_exceeded_and_the_worker_drops_it(
    worker: Worker, channel: grpc.aio.Channel, gate: Gate
) -> None:
    stream = many(channel)
    before = served(worker, "gated", "CANCELLED")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stream.predict(request("gated", x=2), 0.3)
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: worker.service.in_flight == 0)
    await eventually(lambda: served(worker, "gated", "CANCELLED") == before + 1)
    gate.open()  # the model's thread still waits at the gate; let it go
    assert (await stream.predict(request("echo", text="after"), 5.0)).outputs
    await asyncio.sleep(0.05)
    gate.path.unlink()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (pb.PredictManyRequest(id=7), "needs `call` or `cancel`"),
        (
            pb.PredictManyRequest(id=7, call=request("echo", x=1), timeout=Duration(seconds=-1)),
            "must not be negative",
        ),
    ],
    ids=["neither call nor cancel", "negative timeout"],
)
async def test_a_malformed_message_is_answered_invalid_argument_and_the_stream_goes_on(
    channel: grpc.aio.Channel, message: pb.PredictManyRequest, expected: str
) -> None:
    # a raw stream, as a grpcurl user or another language's client drives it
    call = predict_pb2_grpc.PredictStub(channel).PredictMany()
    await call.write(message)
    refused = await answer_of(call, 5.0)
    assert refused.id == 7 and refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert expected in refused.error.message
    await call.write(pb.PredictManyRequest(id=8, call=request("echo", text="fine")))
    assert (await answer_of(call, 5.0)).response.outputs
    await call.done_writing()


async def test_an_id_already_in_flight_is_refused_and_the_first_call_still_answers(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    call = predict_pb2_grpc.PredictStub(channel).PredictMany()
    await call.write(pb.PredictManyRequest(id=1, call=request("gated", x=1)))
    await call.write(pb.PredictManyRequest(id=1, call=request("echo", text="again")))
    refused = await answer_of(call, 5.0)
    assert refused.id == 1 and "already in flight" in refused.error.message
    gate.open()
    answered = await answer_of(call, 30.0)
    assert answered.id == 1 and from_value_map(answered.response.outputs, "outputs")["x"] == 1
    await call.done_writing()
    gate.path.unlink()


async def test_a_raw_client_past_its_deadline_is_answered_deadline_exceeded(
    channel: grpc.aio.Channel, gate: Gate
) -> None:
    call = predict_pb2_grpc.PredictStub(channel).PredictMany()
    await call.write(
        pb.PredictManyRequest(id=3, call=request("gated", x=1), timeout=Duration(nanos=200_000_000))
    )
    answer = await answer_of(call, 10.0)
    assert answer.id == 3 and answer.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "0.2 s" in answer.error.message
    await call.done_writing()
    gate.open()  # the model's thread still waits at the gate; let it go
    await asyncio.sleep(0.05)
    gate.path.unlink()


async def test_an_answer_above_the_clients_limit_fails_that_call_alone(
    worker: Worker, channel: grpc.aio.Channel
) -> None:
    stream = PredictMany(predict_pb2_grpc.PredictStub(channel), max_receive_bytes=16 * 1024)
    big, small = request("echo", text="x" * 20_000), request("echo", text="small")
    results = await asyncio.gather(
        stream.predict(big, 5.0), stream.predict(small, 5.0), return_exceptions=True
    )
    assert isinstance(results[0], grpc.aio.AioRpcError)
    assert results[0].code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16384 bytes" in (results[0].details() or "")
    assert isinstance(results[1], pb.PredictResponse)
    assert (await stream.predict(small, 5.0)).outputs


async def test_a_worker_without_predict_many_is_called_unary(tmp_path: Path) -> None:
    async def predict(request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        return pb.PredictResponse(model=request.model, request_id="unary")

    # a Predict service with Predict alone, as a worker from before PredictMany
    unary_only = grpc.unary_unary_rpc_method_handler(
        predict,
        request_deserializer=pb.PredictRequest.FromString,
        response_serializer=pb.PredictResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("modelyard.v1.Predict", {"Predict": unary_only}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = MultiplexedStub(
                predict_pb2_grpc.PredictStub(ch), lambda: True, max_receive_bytes=LIMIT
            )
            answers = await asyncio.gather(
                *(stub.Predict(request("m"), timeout=5.0) for _ in range(3))
            )
            assert [a.request_id for a in answers] == ["unary"] * 3
            assert (await stub.Predict(request("m"), timeout=5.0)).request_id == "unary"
    finally:
        await server.stop(None)


async def test_shutdown_answers_the_calls_in_flight_and_refuses_later_ones_retryably(
    tmp_path: Path,
) -> None:
    gate = Gate(tmp_path / "gate")
    async with (
        running_worker(models(gate), grace_seconds=30) as worker,
        grpc.aio.insecure_channel(worker.address) as ch,
    ):
        stream = many(ch)
        held = asyncio.ensure_future(stream.predict(request("gated", x=3), 30.0))
        await eventually(lambda: worker.service.in_flight == 1)
        stopping = asyncio.ensure_future(worker.stop())
        await eventually(lambda: worker.service.draining)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.predict(request("echo", text="late"), 5.0)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert from_rpc_error(refused.value).reason == "WORKER_DRAINING"
        gate.open()
        assert from_value_map((await held).outputs, "outputs")["x"] == 3
        await asyncio.wait_for(stopping, 10.0)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stream.predict(request("echo", text="later"), 5.0)
        assert gone.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_serving_token_guards_the_stream(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    auth = {"serving_tokens": ["s3cret-token"]}
    async with (
        running_worker(models(gate), auth=auth) as worker,
        grpc.aio.insecure_channel(worker.address) as ch,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await many(ch).predict(request("echo", text="hi"), 5.0)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        allowed = many(ch, metadata=bearer("s3cret-token"))
        assert (await allowed.predict(request("echo", text="hi"), 5.0)).outputs


@pytest.mark.parametrize("multiplex", [True, False], ids=["multiplexed", "unary"])
async def test_the_composer_sends_its_untraced_node_calls_over_predict_many(
    etcd: EtcdServer, tmp_path: Path, multiplex: bool
) -> None:
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    try:
        async with running_worker(models(Gate(tmp_path / "gate")), etcd=etcd.settings()) as worker:
            settings = ComposerSettings(
                port=0,
                etcd=etcd.settings(),
                controlplanes=[plane.address],
                routing={"multiplex": multiplex},
            )
            composer = Composer(settings)
            await composer.start()
            try:
                await asyncio.wait_for(composer.synced.wait(), timeout=60)  # it read the graphs
                async with AsyncComposerClient(composer.address) as client:
                    await client.deploy(CHAIN)
                    for x in range(5):
                        assert (await client.run("chain", {"x": x}, timeout=10.0)).outputs == {
                            "x": x
                        }
            finally:
                await composer.stop()
            over_stream = served(worker, "echo", "OK")
            unary = worker.telemetry.registry.get_sample_value(
                "modelyard_worker_requests_total",
                {"method": "/modelyard.v1.Predict/Predict", "model": "echo", "code": "OK"},
            )
            assert (over_stream, unary or 0.0) == ((10.0, 0.0) if multiplex else (0.0, 10.0))
    finally:
        await plane.stop()
