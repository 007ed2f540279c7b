"""Errors a program can read, from real servers: the Python clients' `reason`, `field` and
`resource` for a worker's and a composer's refusals, and the same details as grpcurl (a
client that is not Python) prints them."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio

from composer.server import Composer
from composer.settings import ComposerSettings
from controlplane.server import ControlPlane
from controlplane.settings import ControlPlaneSettings
from modelyard.client import AsyncClient
from modelyard.composer_client import AsyncComposerClient
from modelyard.errors import (
    DOMAIN,
    InvalidArgument,
    ModelyardError,
    NotFound,
    ResourceExhausted,
    Unavailable,
    from_rpc_error,
)
from modelyard.v1 import predict_pb2, predict_pb2_grpc, value_pb2
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.grpc_errors import INTERNAL_MESSAGE
from tests.helpers import eventually
from tests.integration.conftest import running_worker
from tests.support.models import Gate
from workers.server import Worker
from workers.settings import WorkerSettings

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))


def worker_models(gate: Gate) -> list[dict[str, Any]]:
    return [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "picky", "class": "tests.support.models:Picky"},
        {"name": "ticker", "class": "tests.support.models:Ticker"},
        {"name": "broken", "class": "tests.support.models:BrokenLoad"},
        {
            # one batch held at the gate on the model's thread, one call queued behind it
            "name": "held",
            "class": "tests.support.models:Gated",
            "batching": {"max_batch_size": 2, "max_wait_ms": 1, "max_queue_size": 1},
            "options": {"predict_gate": str(gate)},
        },
    ]


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(tmp_path_factory.mktemp("gate") / "held")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(gate: Gate) -> AsyncIterator[Worker]:
    async with running_worker(worker_models(gate)) as running:
        try:
            yield running
        finally:  # a failed test must not leave a call held while the worker stops
            gate.open()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(worker: Worker) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(worker.address, timeout=30) as c:
        yield c


# --- a worker, through the Python client -------------------------------------------------

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_an_unknown_model_names_it_as_the_resource(client: AsyncClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.predict("gtp2", text="hi")
    error = caught.value
    assert error.message.startswith("model 'gtp2' is not served here")  # unchanged
    assert (error.reason, error.domain) == ("MODEL_NOT_FOUND", DOMAIN)
    assert error.resource == ("model", "gtp2")
    assert error.field_violations == ()


@pytest.mark.parametrize(
    ("inputs", "reason", "field"),
    [
        ({}, "INPUT_MISSING", "inputs.text"),
        ({"text": 3}, "INPUT_WRONG_KIND", "inputs.text"),
        ({"text": "x", "txt": "y"}, "INPUT_UNKNOWN", "inputs.txt"),
    ],
)
async def test_an_input_that_does_not_fit_names_its_reason_and_field(
    client: AsyncClient, inputs: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.predict("picky", inputs)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.field_violations[0].description == caught.value.message


async def test_a_bad_parameter_names_its_reason_and_field(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.predict("ticker", count=1, parameters={"interval_ms": "fast"})
    assert caught.value.message == "parameter 'interval_ms' must be a float, got a string"
    assert (caught.value.reason, caught.value.field) == (
        "PARAMETER_INVALID",
        "parameters.interval_ms",
    )
    with pytest.raises(InvalidArgument) as unknown:
        await client.predict("ticker", count=1, parameters={"interval": 5})
    assert (unknown.value.reason, unknown.value.field) == (
        "PARAMETER_UNKNOWN",
        "parameters.interval",
    )


async def test_a_value_with_no_kind_names_the_input_it_was_sent_for(worker: Worker) -> None:
    request = predict_pb2.PredictRequest(model="echo")
    request.inputs["blank"].CopyFrom(value_pb2.Value())
    async with grpc.aio.insecure_channel(worker.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await predict_pb2_grpc.PredictStub(channel).Predict(request, timeout=30)
    error = from_rpc_error(caught.value)
    assert (error.reason, error.field) == ("VALUE_MALFORMED", "inputs.blank")


async def test_a_full_queue_says_queue_full(
    client: AsyncClient, worker: Worker, gate: Gate
) -> None:
    runner = worker.registry.get("held").runner

    def in_flight() -> int:
        return worker.service.load().model_in_flight["held"]

    first = asyncio.create_task(client.predict("held", x=0))
    await eventually(lambda: in_flight() == 1 and runner.queue_depth == 0, timeout=30)
    second = asyncio.create_task(client.predict("held", x=1))  # waits behind the first
    await eventually(lambda: runner.queue_depth == 1, timeout=30)
    try:
        with pytest.raises(ResourceExhausted) as caught:
            await client.predict("held", x=2)
    finally:
        gate.open()
    assert "queue limit" in caught.value.message
    assert (caught.value.reason, caught.value.metadata) == ("QUEUE_FULL", {"model": "held"})
    assert [(await call).outputs["x"] for call in (first, second)] == [0, 1]


async def test_a_model_that_failed_to_load_and_a_draining_worker_say_which(
    client: AsyncClient, worker: Worker
) -> None:
    with pytest.raises(Unavailable) as failed:
        await client.predict("broken")
    assert (failed.value.reason, failed.value.metadata) == ("MODEL_FAILED", {"model": "broken"})
    worker.service.set_draining(True)
    try:
        with pytest.raises(Unavailable) as draining:
            await client.predict("echo", x=1)
    finally:
        worker.service.set_draining(False)
    assert draining.value.reason == "WORKER_DRAINING"


async def test_a_bug_is_internal_with_a_fixed_message_and_only_the_reason(
    client: AsyncClient,
) -> None:
    with pytest.raises(ModelyardError) as caught:
        await client.predict("picky", text="boom")  # Picky raises a plain RuntimeError
    error = caught.value
    assert (error.code, error.message) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert (error.reason, error.domain) == ("INTERNAL", DOMAIN)
    assert (error.field_violations, error.resource, error.metadata) == ((), None, {})


async def test_a_loading_model_says_model_loading(tmp_path: Path) -> None:
    loaded = Gate(tmp_path / "loaded")  # its load returns once the test opens it
    model = {
        "name": "slow",
        "class": "tests.support.models:Gated",
        "options": {"load_gate": str(loaded)},
    }
    worker = Worker(WorkerSettings(host="127.0.0.1", port=0, models=[model]))
    starting = asyncio.create_task(worker.start())  # returns once the model has loaded
    try:
        await eventually(lambda: worker.port != 0, timeout=30)
        async with grpc.aio.insecure_channel(worker.address) as channel:
            stub = predict_pb2_grpc.PredictStub(channel)
            request = predict_pb2.PredictRequest(model="slow")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(request, wait_for_ready=True, timeout=30)
    finally:
        loaded.open()
        await starting
        await worker.stop()
    error = from_rpc_error(caught.value)
    assert isinstance(error, Unavailable) and "still loading" in error.message
    assert (error.reason, error.metadata) == ("MODEL_LOADING", {"model": "slow"})


# --- grpcurl: the same details, read by a client that is not Python ----------------------


async def grpcurl(address: str, method: str, request: dict[str, Any]) -> str:
    """What grpcurl prints for a failed call (it uses server reflection)."""
    assert GRPCURL is not None, "grpcurl is installed with the cli extra"
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-d",
        json.dumps(request),
        address,
        method,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode != 0, out.decode()
    return err.decode()


def printed_details(output: str) -> list[dict[str, Any]]:
    """The details grpcurl prints, one JSON object a line after "Details:"."""
    assert "Details:" in output, output
    details = output.split("Details:", 1)[1]
    return [json.loads(found) for found in re.findall(r"^\s*\d+\)\s+(\{.*\})$", details, re.M)]


async def test_grpcurl_prints_the_reason_and_the_resource(worker: Worker) -> None:
    output = await grpcurl(worker.address, "modelyard.v1.Predict/Predict", {"model": "gtp2"})
    assert "Code: NotFound" in output
    assert "Message: model 'gtp2' is not served here" in output
    assert printed_details(output) == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "MODEL_NOT_FOUND",
            "domain": "modelyard.dev",
        },
        {
            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
            "resource_type": "model",
            "resource_name": "gtp2",
        },
    ]


async def test_grpcurl_prints_the_field_violation(worker: Worker) -> None:
    request = {"model": "picky", "inputs": {"text": {"int_value": 3}}}
    output = await grpcurl(worker.address, "modelyard.v1.Predict/Predict", request)
    info, bad = printed_details(output)
    assert info["reason"] == "INPUT_WRONG_KIND"
    assert bad["field_violations"] == [
        {"field": "inputs.text", "description": "input 'text' must be a string, got an integer"}
    ]


# --- a composer --------------------------------------------------------------------------

COPY = {"name": "copy", "model": "echo", "inputs": {"x": "inputs.x"}}
PICKY_AFTER_ECHO: dict[str, Any] = {
    "name": "shout",
    "inputs": {"x": "any"},
    "nodes": [COPY, {"name": "loud", "model": "picky", "inputs": {"text": "copy.x"}}],
    "outputs": {"text": "loud.text"},
}


@pytest_asyncio.fixture(loop_scope="module")
async def composer(etcd: EtcdServer) -> AsyncIterator[str]:
    """A composer, with its control plane and a worker serving echo and picky."""
    plane = ControlPlane(ControlPlaneSettings(port=0, etcd=etcd.settings()))
    await plane.start()
    models = [
        {"name": "echo", "class": "tests.support.models:Echo"},
        {"name": "picky", "class": "tests.support.models:Picky"},
    ]
    try:
        async with running_worker(models, etcd=etcd.settings(), lease_ttl=2.0):
            settings = ComposerSettings(port=0, etcd=etcd.settings(), controlplanes=[plane.address])
            running = Composer(settings)
            await running.start()
            try:
                await asyncio.wait_for(running.synced.wait(), timeout=60)  # it read the graphs
                for model in ("echo", "picky"):
                    assert await running.routed.wait_for_endpoints(model, timeout=30)
                yield running.address
            finally:
                await running.stop()
    finally:
        await plane.stop()


async def test_an_unknown_graph_names_it_as_the_resource(composer: str) -> None:
    async with AsyncComposerClient(composer, timeout=30) as client:
        with pytest.raises(NotFound) as caught:
            await client.run("nobody-deployed-this", x=1)
    assert caught.value.message.startswith("graph 'nobody-deployed-this' is not deployed")
    assert caught.value.reason == "GRAPH_NOT_FOUND"
    assert caught.value.resource == ("graph", "nobody-deployed-this")


async def test_an_invalid_graph_is_refused_at_deploy_naming_each_node_by_position(
    composer: str,
) -> None:
    graph = {
        **PICKY_AFTER_ECHO,
        "nodes": [COPY, {"name": "loud", "model": "picky", "inputs": {"txt": "copy.x"}}],
        "outputs": {"text": "loud.text", "label": "nowhere.label"},
    }
    async with AsyncComposerClient(composer, timeout=30) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.deploy(graph)
    error = caught.value
    assert error.reason == "GRAPH_INVALID"
    assert error.message.startswith("graph 'shout' is invalid: ")
    assert [v.field for v in error.field_violations] == [
        "nodes[1].inputs.txt",  # picky takes no 'txt' ...
        "nodes[1].inputs.text",  # ... and needs 'text'
        "outputs.label",
    ]
    assert all(v.description in error.message for v in error.field_violations)


async def test_a_workers_error_in_a_node_keeps_its_reason_under_the_nodes_path(
    composer: str,
) -> None:
    async with AsyncComposerClient(composer, timeout=30) as client:
        assert await client.deploy(PICKY_AFTER_ECHO) == []
        with pytest.raises(InvalidArgument) as caught:
            await client.run("shout", x=3)  # echo passes 3 on; picky takes a string
    error = caught.value
    assert error.message == "node 'loud': input 'text' must be a string, got an integer"
    assert (error.reason, error.field) == ("INPUT_WRONG_KIND", "nodes[1].inputs.text")
    assert error.metadata == {"node": "loud"}
    async with AsyncComposerClient(composer, timeout=30) as client:
        with pytest.raises(InvalidArgument) as missing:
            await client.run("shout")
    assert (missing.value.reason, missing.value.field) == ("INPUT_MISSING", "inputs.x")
