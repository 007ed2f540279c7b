"""Tracing over real gRPC: a grpc.aio server and channel on 127.0.0.1 with the tracing
interceptors of two "services" (each its own Tracing, as two processes would have),
exporting over OTLP to a real receiver. One trace across client and server, W3C context in
the metadata, streams, batch links, logs with the ids, the upstream instrumentation's
cancellation and streaming bugs, and tracing off."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.trace import SpanContext

from modelyard_server.logging_setup import log_handler
from modelyard_server.telemetry.settings import TelemetrySettings
from modelyard_server.telemetry.spans import (
    BATCH_SIZE,
    MODEL,
    batch_span,
    current_span_context,
    current_trace_id,
    start_span,
)
from modelyard_server.telemetry.tracing import Tracing, setup_tracing
from tests.support.otlp import OtlpReceiver, ReceivedSpan

SERVICE = "test.Traced"
log = logging.getLogger("tests.telemetry.handlers")
# long enough to fail a test whose cancellation never arrives, never reached otherwise
WAIT = 30.0


@dataclass
class Calls:
    """What the handlers saw, and the events a test steers them with."""

    metadata: list[dict[str, Any]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    trace_id_at_cleanup: list[str | None] = field(default_factory=list)
    queued: list[SpanContext | None] = field(default_factory=list)
    batch_formed: asyncio.Event = field(default_factory=asyncio.Event)


def _handlers(calls: Calls, tracing: Tracing) -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        calls.metadata.append(dict(context.invocation_metadata() or ()))
        with start_span(tracing.tracer, "inner work", attributes={MODEL: "echo"}):
            log.info("echo handled")
        return request

    async def wait(request: bytes, context: Any) -> bytes:
        calls.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            calls.cancelled.set()
            raise
        return b""

    async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"%d" % i

    async def endless(request: bytes, context: Any) -> AsyncIterator[bytes]:
        # never awaits: a cancellation can only land in the server's write, with this
        # generator waiting at its `yield` (#2357)
        try:
            while True:
                yield b"tick"
        finally:
            calls.trace_id_at_cleanup.append(current_trace_id())
            calls.closed.set()

    async def wait_streaming(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        await wait(request, context)

    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for _ in requests:
            return await wait(b"", context)
        return b""

    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    async def chat_by_writes(requests: AsyncIterator[bytes], context: Any) -> None:
        async for message in requests:
            await context.write(message)

    async def queue_for_batch(request: bytes, context: Any) -> bytes:
        calls.queued.append(current_span_context())
        if len(calls.queued) < int(request):
            await calls.batch_formed.wait()
            return b"served"
        # the last request to arrive runs the batch, with its own span current: the batch
        # span must not become its child
        with batch_span(tracing.tracer, "batch", calls.queued, attributes={MODEL: "echo"}):
            calls.batch_formed.set()
        return b"served"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Wait": grpc.unary_unary_rpc_method_handler(wait),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Endless": grpc.unary_stream_rpc_method_handler(endless),
            "WaitStreaming": grpc.unary_stream_rpc_method_handler(wait_streaming),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "ChatByWrites": grpc.stream_stream_rpc_method_handler(chat_by_writes),
            "QueueForBatch": grpc.unary_unary_rpc_method_handler(queue_for_batch),
        },
    )


@dataclass
class Traced:
    """A traced server and a traced channel to it, with the receiver they export to."""

    receiver: OtlpReceiver
    address: str
    server_tracing: Tracing
    client_tracing: Tracing
    channel: grpc.aio.Channel
    calls: Calls

    def method(self, name: str) -> str:
        return f"/{SERVICE}/{name}"

    def flush(self) -> list[ReceivedSpan]:
        """Every span both sides made, exported (shutdown flushes)."""
        self.server_tracing.shutdown()
        self.client_tracing.shutdown()
        return self.receiver.spans()


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's OTEL_* variables must not switch these tests' tracing on or off."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def tracing_for(receiver: OtlpReceiver, service: str) -> Tracing:
    settings = TelemetrySettings(otlp_endpoint=receiver.endpoint, service_name=service)
    return setup_tracing(settings, default_service_name="unused")


@pytest_asyncio.fixture
async def traced(receiver: OtlpReceiver) -> AsyncIterator[Traced]:
    server_tracing = tracing_for(receiver, "test-server")
    client_tracing = tracing_for(receiver, "test-client")
    calls = Calls()
    server = grpc.aio.server(interceptors=server_tracing.server_interceptors())
    server.add_generic_rpc_handlers((_handlers(calls, server_tracing),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address, interceptors=client_tracing.client_interceptors())
    try:
        yield Traced(receiver, address, server_tracing, client_tracing, channel, calls)
    finally:
        await channel.close()
        await server.stop(None)
        server_tracing.shutdown()
        client_tracing.shutdown()


def _raw(message: bytes) -> bytes:
    return message


def unary_unary(
    channel: grpc.aio.Channel, name: str
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/{SERVICE}/{name}", _raw, _raw)


def unary_stream(
    channel: grpc.aio.Channel, name: str
) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    return channel.unary_stream(f"/{SERVICE}/{name}", _raw, _raw)


def stream_unary(
    channel: grpc.aio.Channel, name: str
) -> grpc.aio.StreamUnaryMultiCallable[bytes, bytes]:
    return channel.stream_unary(f"/{SERVICE}/{name}", _raw, _raw)


def stream_stream(
    channel: grpc.aio.Channel, name: str
) -> grpc.aio.StreamStreamMultiCallable[bytes, bytes]:
    return channel.stream_stream(f"/{SERVICE}/{name}", _raw, _raw)


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"expected one {service} span {name!r}, got {spans}"
    return found[0]


async def awaited(call: Any) -> Any:
    """The call's response (a task can run this; a call object is no coroutine)."""
    return await call


def assert_cancelled(span: ReceivedSpan) -> None:
    assert span.status == "ERROR", span
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0], span


def instrumentation_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING
    ]


async def test_one_trace_from_the_client_call_through_the_server_span_to_its_children(
    traced: Traced,
) -> None:
    assert await unary_unary(traced.channel, "Echo")(b"hi") == b"hi"
    spans = traced.flush()

    client = one(spans, "test-client", traced.method("Echo"))
    server = one(spans, "test-server", traced.method("Echo"))
    inner = one(spans, "test-server", "inner work")
    assert client.kind == "CLIENT" and server.kind == "SERVER"
    assert client.trace_id == server.trace_id == inner.trace_id
    assert client.parent_span_id is None
    assert server.parent_span_id == client.span_id
    assert inner.parent_span_id == server.span_id
    assert inner.attributes[MODEL] == "echo"
    assert server.attributes["rpc.service"] == SERVICE
    assert server.attributes["rpc.method"] == "Echo"


async def test_the_context_travels_as_a_w3c_traceparent_header(traced: Traced) -> None:
    await unary_unary(traced.channel, "Echo")(b"hi")
    client = one(traced.flush(), "test-client", traced.method("Echo"))

    (metadata,) = traced.calls.metadata
    version, trace_id, parent_id, flags = metadata["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", client.trace_id, client.span_id)
    assert int(flags, 16) & 0x01  # sampled


async def test_a_call_without_tracing_on_the_client_starts_the_trace_at_the_server(
    traced: Traced,
) -> None:
    async with grpc.aio.insecure_channel(traced.address) as plain:
        await unary_unary(plain, "Echo")(b"hi")
    spans = traced.flush()

    server = one(spans, "test-server", traced.method("Echo"))
    assert server.parent_span_id is None
    assert one(spans, "test-server", "inner work").trace_id == server.trace_id
    assert "traceparent" not in traced.calls.metadata[0]


async def test_logs_in_a_span_carry_its_trace_and_span_ids(traced: Traced) -> None:
    lines = io.StringIO()
    handler = log_handler("json", lines)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        await unary_unary(traced.channel, "Echo")(b"hi")
    finally:
        log.removeHandler(handler)
    inner = one(traced.flush(), "test-server", "inner work")

    (line,) = lines.getvalue().splitlines()
    event = json.loads(line)
    assert event["message"] == "echo handled"
    assert (event["trace_id"], event["span_id"]) == (inner.trace_id, inner.span_id)


async def test_a_server_stream_is_one_client_span_over_one_server_span_without_errors(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    call = unary_stream(traced.channel, "Count")(b"")
    assert [message async for message in call] == [b"0", b"1", b"2"]
    spans = traced.flush()

    client = one(spans, "test-client", traced.method("Count"))
    server = one(spans, "test-server", traced.method("Count"))
    assert server.trace_id == client.trace_id
    assert server.parent_span_id == client.span_id
    assert server.status == "UNSET" and client.status == "UNSET"
    assert instrumentation_errors(caplog) == []


async def test_a_stream_cancelled_at_a_yield_closes_the_handler_in_its_span_without_errors(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    # upstream #2357: the generator, dropped by gRPC, is closed later in another task,
    # where detaching the server's context fails ("Failed to detach context")
    received = asyncio.Event()

    async def read_until_cancelled() -> None:
        count = 0
        async for _ in unary_stream(traced.channel, "Endless")(b""):
            count += 1
            if count == 3:
                received.set()

    reader = asyncio.create_task(read_until_cancelled())
    await asyncio.wait_for(received.wait(), WAIT)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.wait_for(traced.calls.closed.wait(), WAIT)
    spans = traced.flush()

    server = one(spans, "test-server", traced.method("Endless"))
    assert traced.calls.trace_id_at_cleanup == [server.trace_id]
    assert server.parent_span_id == one(spans, "test-client", traced.method("Endless")).span_id
    assert_cancelled(server)  # upstream ends it looking successful
    assert instrumentation_errors(caplog) == []


@pytest.mark.parametrize("how", ["cancel the task", "cancel the call"])
async def test_cancelling_a_unary_call_cancels_the_server_handler(traced: Traced, how: str) -> None:
    # upstream #3271: the client interceptor swallowed the cancellation, the RPC ran on
    call = unary_unary(traced.channel, "Wait")(b"")
    caller = asyncio.create_task(awaited(call))
    await asyncio.wait_for(traced.calls.started.wait(), WAIT)
    if how == "cancel the task":
        caller.cancel()
    else:
        call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(traced.calls.cancelled.wait(), WAIT)
    spans = traced.flush()

    client = one(spans, "test-client", traced.method("Wait"))
    assert_cancelled(client)
    server = one(spans, "test-server", traced.method("Wait"))
    assert server.parent_span_id == client.span_id
    assert_cancelled(server)  # upstream ends it looking successful


async def test_cancelling_a_client_stream_cancels_the_server_handler(traced: Traced) -> None:
    async def requests() -> AsyncIterator[bytes]:
        yield b"one"
        await asyncio.Event().wait()  # the stream stays open

    call = stream_unary(traced.channel, "Collect")(requests())
    caller = asyncio.create_task(awaited(call))
    await asyncio.wait_for(traced.calls.started.wait(), WAIT)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(traced.calls.cancelled.wait(), WAIT)
    assert one(traced.flush(), "test-client", traced.method("Collect")).status == "ERROR"


async def test_cancelling_a_server_stream_cancels_the_server_handler(traced: Traced) -> None:
    received = asyncio.Event()

    async def read_all() -> None:
        async for _ in unary_stream(traced.channel, "WaitStreaming")(b""):
            received.set()

    reader = asyncio.create_task(read_all())
    # Only once a message arrived: grpcio itself (no interceptor involved) does not cancel
    # the RPC when the reading task is cancelled while its first read still waits for the
    # request to be sent; callers that must stop the server cancel the call itself.
    await asyncio.wait_for(received.wait(), WAIT)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.wait_for(traced.calls.cancelled.wait(), WAIT)
    # cancelled while the handler worked, not at a yield
    assert_cancelled(one(traced.flush(), "test-server", traced.method("WaitStreaming")))


async def test_a_call_past_its_deadline_ends_its_server_span_as_deadline_exceeded(
    traced: Traced,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary_unary(traced.channel, "Wait")(b"", timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(traced.calls.cancelled.wait(), WAIT)
    server = one(traced.flush(), "test-server", traced.method("Wait"))
    assert server.status == "ERROR"
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    assert (server.attributes["rpc.grpc.status_code"], server.status_message) == (
        code.value[0],
        code.name,
    )


async def test_bidirectional_streams_work_traced_or_written_by_the_handler(traced: Traced) -> None:
    # upstream #3066: a stream-stream handler that writes (a coroutine, not a generator)
    # failed with TypeError under the server interceptor; it now passes through untraced
    for name in ("Chat", "ChatByWrites"):
        call = stream_stream(traced.channel, name)(iter([b"a", b"b"]))
        assert [message async for message in call] == [b"a", b"b"], name
    spans = traced.flush()

    chat = one(spans, "test-server", traced.method("Chat"))
    assert chat.parent_span_id == one(spans, "test-client", traced.method("Chat")).span_id
    assert [s for s in spans if s.service == "test-server" and "ChatByWrites" in s.name] == []


async def test_health_watch_works_and_health_calls_make_no_spans(traced: Traced) -> None:
    # grpc.health.v1 Watch is a coroutine writing its stream, which #3066 breaks when traced;
    # health calls are not traced at all
    stub = health_pb2_grpc.HealthStub(traced.channel)
    assert (
        await stub.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest())
    first = await watch.read()
    watch.cancel()

    assert isinstance(first, health_pb2.HealthCheckResponse)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert traced.flush() == []


async def test_a_batch_span_starts_its_own_trace_and_links_every_request_it_served(
    traced: Traced,
) -> None:
    queue = unary_unary(traced.channel, "QueueForBatch")
    replies = await asyncio.gather(*(queue(b"3") for _ in range(3)))
    assert replies == [b"served"] * 3
    spans = traced.flush()

    requests = [s for s in spans if s.service == "test-server" and "QueueForBatch" in s.name]
    batch = one(spans, "test-server", "batch")
    assert len(requests) == 3
    assert batch.parent_span_id is None
    assert batch.trace_id not in {r.trace_id for r in requests}
    assert sorted(batch.links) == sorted((r.trace_id, r.span_id) for r in requests)
    assert batch.attributes[BATCH_SIZE] == 3
    assert batch.attributes[MODEL] == "echo"


async def test_shutdown_exports_the_spans_still_queued(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # no export before shutdown
    tracing = tracing_for(receiver, "test-flush")
    with start_span(tracing.tracer, "queued"):
        pass
    assert receiver.spans() == []

    tracing.shutdown()

    assert [(s.service, s.name) for s in receiver.spans()] == [("test-flush", "queued")]


async def test_off_there_are_no_interceptors_and_no_spans(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # the operator's switch beats the endpoint
    tracing = tracing_for(receiver, "test-off")
    assert not tracing.enabled
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []

    calls = Calls()
    server = grpc.aio.server(interceptors=tracing.server_interceptors())
    server.add_generic_rpc_handlers((_handlers(calls, tracing),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=tracing.client_interceptors()
        ) as channel:
            assert await unary_unary(channel, "Echo")(b"hi") == b"hi"
    finally:
        await server.stop(None)
    tracing.shutdown()

    assert receiver.spans() == []
    assert "traceparent" not in calls.metadata[0]
