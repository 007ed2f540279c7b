"""The composer bench's load generator: its own process, so its CPU is never the servers'.

    python -m bench.composer_load '{"kind": "run", "address": "127.0.0.1:50070", ...}'

Kinds of request (one per spec):

  run     Composer.Run of a deployed graph (`graph`) or an inline one (`graph_inline`, the
          file form), request serialised once, response kept as bytes.
  chain   the client calls workers itself, one after the other (`hops`: [address, model]),
          each call's outputs becoming the next call's inputs (parsed and copied, as a
          client doing the chain itself must).
  fanout  the client calls every hop at once with the same inputs (asyncio.gather).
  http    POST of one JSON body to `url` over HTTP/1.1 keep-alive, one connection per
          coroutine, with a minimal asyncio-streams client (stdlib only: the project venv
          has neither aiohttp nor httpx, and this client is cheaper than both, which only
          favours the HTTP baseline on a shared 2-core machine).
  stream  Composer.RunStream; the latency recorded is the time to the first NodeChunk of
          node `node` (`until: "chunk"`) or to its NodeFinished (`until: "finished"`); the
          whole run's time is reported beside it.

N coroutines share one request budget after a warm-up at the same concurrency; every
phase is bounded by a request count and a time cap, every call by a deadline. Before the
timed phase one response is parsed and checked (`expect`: outputs that must be equal) and
returned as `sample`. Prints one JSON object: counts, nearest-rank percentiles (ms),
throughput, and CPU used by the client, by the servers (`server_pids`, summed) and by the
whole machine over the timed phase.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio
import psutil

from bench.loadgen import machine_busy_seconds, pct, percentile
from modelyard.v1 import composer_pb2, predict_pb2
from modelyard.values import fill_value_map, from_value_map

RUN = "/modelyard.v1.Composer/Run"
RUN_STREAM = "/modelyard.v1.Composer/RunStream"
PREDICT = "/modelyard.v1.Predict/Predict"


@dataclass
class Spec:
    kind: str  # run | chain | http | stream
    concurrency: int = 1
    requests: int = 100
    warmup: int = 10
    time_cap_s: float = 20.0
    deadline_s: float = 30.0
    server_pids: list[int] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)  # chain, fanout: every call's
    expect: dict[str, Any] = field(default_factory=dict)
    address: str = ""  # run, stream: the composer
    graph: str = ""  # run, stream: a deployed graph's name ...
    graph_inline: dict[str, Any] | None = None  # ... or the graph itself (file form)
    hops: list[list[str]] = field(default_factory=list)  # chain, fanout: [address, model]
    url: str = ""  # http
    node: str = ""  # stream: the node whose first result is timed
    until: str = "chunk"  # stream: "chunk" or "finished"


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


RawUnary = Callable[..., Any]  # grpc.aio multicallables on bytes (no (de)serialisers)
RawStream = Callable[..., Any]

# One call of a phase: coroutine index -> the call's "first event" latency in ns, or None
# when the call's own duration is what counts. Raises on failure.
Call = Callable[[int], Awaitable[int | None]]


class Runner:
    """Issues `total` calls from a shared budget with N coroutines; one per phase."""

    def __init__(self, spec: Spec, call: Call) -> None:
        self.spec, self.call = spec, call
        self.latencies_ns: list[int] = []
        self.totals_ns: list[int] = []
        self.error_codes: dict[str, int] = {}
        self.issued = 0
        self.total = 0
        self.stop_at = 0.0
        self.capped = False

    async def run(self, total: int, time_cap_s: float) -> float:
        self.total, self.stop_at = total, time.monotonic() + time_cap_s
        started = time.perf_counter()
        await asyncio.gather(*(self._worker(i) for i in range(self.spec.concurrency)))
        return time.perf_counter() - started

    async def _worker(self, index: int) -> None:
        while self.issued < self.total:
            if time.monotonic() >= self.stop_at:
                self.capped = True
                return
            self.issued += 1
            begin = time.perf_counter_ns()
            try:
                first = await self.call(index)
            except Exception as error:
                name = error_name(error)
                self.error_codes[name] = self.error_codes.get(name, 0) + 1
                continue
            took = time.perf_counter_ns() - begin
            self.totals_ns.append(took)
            self.latencies_ns.append(took if first is None else first - begin)


def error_name(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    if isinstance(error, HttpError):
        return f"HTTP_{error.status}"
    if isinstance(error, TimeoutError):
        return "TIMEOUT"
    if isinstance(error, OSError | asyncio.IncompleteReadError):
        return "CONNECTION"
    return type(error).__name__


# -- run and stream: the composer ---------------------------------------------------------


def run_request(spec: Spec, message: type[Any]) -> Any:
    if spec.graph_inline is not None:
        from composer.spec import graph_from_dict

        request = message(graph=graph_from_dict(spec.graph_inline))
    else:
        request = message(name=spec.graph)
    fill_value_map(request.inputs, spec.inputs)
    return request


def check(spec: Spec, outputs: dict[str, Any]) -> dict[str, Any]:
    for key, value in spec.expect.items():
        if outputs.get(key) != value:
            raise AssertionError(f"output {key!r}: expected {value!r}, got {outputs.get(key)!r}")
    if not outputs:
        raise AssertionError("a response without outputs")
    return outputs


async def run_calls(spec: Spec) -> tuple[list[Call], Callable[[], Awaitable[dict[str, Any]]]]:
    channel = grpc.aio.insecure_channel(spec.address)
    CHANNELS.append(channel)
    raw: RawUnary = channel.unary_unary(RUN)  # bytes in, bytes out
    payload = run_request(spec, composer_pb2.RunRequest).SerializeToString()

    async def call(_: int) -> None:
        await raw(payload, timeout=spec.deadline_s)

    async def sample() -> dict[str, Any]:
        reply = composer_pb2.RunResponse.FromString(await raw(payload, timeout=spec.deadline_s))
        return check(spec, from_value_map(reply.outputs))

    return [call], sample


async def stream_calls(spec: Spec) -> tuple[list[Call], Callable[[], Awaitable[dict[str, Any]]]]:
    channel = grpc.aio.insecure_channel(spec.address)
    CHANNELS.append(channel)
    raw: RawStream = channel.unary_stream(RUN_STREAM)  # bytes in, bytes out
    payload = run_request(spec, composer_pb2.RunStreamRequest).SerializeToString()
    want = "chunk" if spec.until == "chunk" else "node_finished"

    async def call(_: int) -> int:
        first = 0
        got_result = False
        async for message in raw(payload, timeout=spec.deadline_s):
            event = composer_pb2.RunStreamResponse.FromString(message)
            kind = event.WhichOneof("event")
            if not first and kind == want and getattr(event, want).node == spec.node:
                first = time.perf_counter_ns()
            got_result = kind == "result"
        if not first or not got_result:
            raise AssertionError(f"no {want} of node {spec.node!r}, or no result")
        return first

    async def sample() -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        chunks = 0
        async for message in raw(payload, timeout=spec.deadline_s):
            event = composer_pb2.RunStreamResponse.FromString(message)
            if event.WhichOneof("event") == "chunk" and event.chunk.node == spec.node:
                chunks += 1
            if event.WhichOneof("event") == "result":
                outputs = from_value_map(event.result.outputs)
        return {**check(spec, outputs), f"{spec.node}_chunks": chunks}

    return [call], sample


# -- chain: the client calls the workers itself -------------------------------------------


async def chain_calls(spec: Spec) -> tuple[list[Call], Callable[[], Awaitable[dict[str, Any]]]]:
    channels: dict[str, grpc.aio.Channel] = {}
    hops: list[tuple[RawUnary, str]] = []
    for address, model in spec.hops:
        if address not in channels:
            channels[address] = grpc.aio.insecure_channel(address)
            CHANNELS.append(channels[address])
        hops.append((channels[address].unary_unary(PREDICT), model))
    payloads = []
    for _, model in hops:
        request = predict_pb2.PredictRequest(model=model)
        fill_value_map(request.inputs, spec.inputs)
        fill_value_map(request.parameters, spec.parameters)
        payloads.append(request.SerializeToString())

    async def chain() -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse.FromString(
            await hops[0][0](payloads[0], timeout=spec.deadline_s)
        )
        for raw, model in hops[1:]:
            request = predict_pb2.PredictRequest(model=model)
            for key, value in response.outputs.items():  # outputs become the next inputs
                request.inputs[key].CopyFrom(value)
            fill_value_map(request.parameters, spec.parameters)
            reply = await raw(request.SerializeToString(), timeout=spec.deadline_s)
            response = predict_pb2.PredictResponse.FromString(reply)
        return response

    async def fanout() -> predict_pb2.PredictResponse:
        calls = zip(hops, payloads, strict=True)
        replies = await asyncio.gather(
            *(raw(payload, timeout=spec.deadline_s) for (raw, _), payload in calls)
        )
        return predict_pb2.PredictResponse.FromString(replies[-1])

    run = fanout if spec.kind == "fanout" else chain

    async def call(_: int) -> None:
        await run()

    async def sample() -> dict[str, Any]:
        return check(spec, from_value_map((await run()).outputs))

    return [call], sample


# -- http: a minimal HTTP/1.1 keep-alive client -------------------------------------------


class HttpConnection:
    """One keep-alive connection; reconnects after any failure."""

    def __init__(self, url: str, body: bytes) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange()
        except BaseException:
            self.close()  # a half-read response must not be read as the next one
            raise

    async def _exchange(self) -> bytes:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(self.request)
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # the empty trailer
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        if status != 200:
            raise HttpError(status, body)
        return body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def http_calls(spec: Spec) -> tuple[list[Call], Callable[[], Awaitable[dict[str, Any]]]]:
    body = json.dumps(spec.inputs).encode()
    connections = [HttpConnection(spec.url, body) for _ in range(spec.concurrency)]
    CLOSERS.extend(c.close for c in connections)

    def call_on(connection: HttpConnection) -> Call:
        async def call(_: int) -> None:
            await connection.call(spec.deadline_s)

        return call

    async def sample() -> dict[str, Any]:
        outputs: dict[str, Any] = json.loads(await connections[0].call(spec.deadline_s))
        return check(spec, outputs)

    return [call_on(c) for c in connections], sample


# -- the phases ---------------------------------------------------------------------------

CHANNELS: list[grpc.aio.Channel] = []
CLOSERS: list[Callable[[], None]] = []
KINDS = {
    "run": run_calls,
    "stream": stream_calls,
    "chain": chain_calls,
    "fanout": chain_calls,
    "http": http_calls,
}


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue  # gone: its CPU is no longer counted (the record shows the pids)
        total += times.user + times.system
    return total


async def measure(spec: Spec) -> dict[str, Any]:
    try:
        calls, sample = await KINDS[spec.kind](spec)
        checked = await sample()

        async def call(index: int) -> int | None:
            return await calls[index % len(calls)](index)

        await Runner(spec, call).run(spec.warmup, spec.time_cap_s)
        runner = Runner(spec, call)
        gc.collect()
        gc.freeze()  # setup garbage must not trigger collections inside the timed loop
        server, client, machine = (
            cpu_seconds(spec.server_pids),
            time.process_time(),
            machine_busy_seconds(),
        )
        duration = await runner.run(spec.requests, spec.time_cap_s)
        server = cpu_seconds(spec.server_pids) - server
        client = time.process_time() - client
        machine = machine_busy_seconds() - machine
    finally:
        for close in CLOSERS:
            close()
        await asyncio.gather(*(channel.close() for channel in CHANNELS))
    return summarise(runner, duration, server, client, machine, checked)


def summarise(
    runner: Runner,
    duration: float,
    server: float,
    client: float,
    machine: float,
    sample: dict[str, Any],
) -> dict[str, Any]:
    lat = sorted(ns / 1e6 for ns in runner.latencies_ns)
    totals = sorted(ns / 1e6 for ns in runner.totals_ns)
    ok = len(lat)
    errors = sum(runner.error_codes.values())
    result = {
        "requests": runner.issued,
        "ok": ok,
        "errors": errors,
        "error_codes": runner.error_codes,
        "capped": runner.capped,
        "duration_s": round(duration, 3),
        "throughput_rps": round(ok / duration, 2) if duration > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 3),
        "p90_ms": round(percentile(lat, 90), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(lat[-1], 3) if lat else 0.0,
        "client_cpu_pct": pct(client, duration),
        "server_cpu_pct": pct(server, duration),
        "server_cpu_ms_per_req": round(1000 * server / ok, 3) if ok else 0.0,
        "machine_cpu_pct": pct(machine, duration),
        "other_cpu_pct": pct(max(0.0, machine - client - server), duration),
        "sample": sample,
    }
    if runner.latencies_ns != runner.totals_ns:
        result["total_p50_ms"] = round(percentile(totals, 50), 3)
        result["total_p99_ms"] = round(percentile(totals, 99), 3)
    return result


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    if spec.kind not in KINDS:
        raise SystemExit(f"unknown kind {spec.kind!r}: use one of {', '.join(KINDS)}")
    print(json.dumps(asyncio.run(measure(spec)), default=str), flush=True)


if __name__ == "__main__":
    main()
