"""`chat_grpc` and `chat_sse`: one streamed llm/v1/chat answer per call, timed to its
first token, its tokens counted.

  chat_grpc  a worker's PredictStream (raw bytes), as a gRPC client calls the model
  chat_sse   the gateway's POST /v1/chat/completions with "stream": true, read as
             server-sent events over a minimal HTTP/1.1 keep-alive client per coroutine

A call's answer (the phase's latency) is the first chunk whose text is not empty: the time
to first token; the call ends with the stream. Both sides parse only what they must (the
chunks up to the first token, and the last message, which carries the usage), so neither
client spends more of the shared cores than the other. `figures` gives the completion
tokens of the measured phase's calls and their rate, from the answers' own usage.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc.aio

from bench.common.load.phase import HttpError
from bench.common.load.predict import PREDICT_STREAM
from bench.common.load.spec import LoadSpec
from bench.common.load.target import RawCall, Target
from modelyard.client import build_request
from modelyard.v1 import predict_pb2 as pb
from modelyard.values import from_value_map


@dataclass
class Tokens:
    """Completion tokens of the calls that started in the measured phase."""

    counted: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, tokens

    def add(self, started: float, tokens: int) -> None:
        self.counted.append((started, time.monotonic(), tokens))

    def figures(self, since: float) -> dict[str, Any]:
        mine = [(end, tokens) for start, end, tokens in self.counted if start >= since]
        total = sum(tokens for _, tokens in mine)
        elapsed = max((end for end, _ in mine), default=since) - since
        return {
            "completion_tokens": total,
            "tokens_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
        }


def _has_text(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def open_chat_grpc(spec: LoadSpec) -> Target:
    channel = grpc.aio.insecure_channel(spec.address)
    raw: RawCall = channel.unary_stream(PREDICT_STREAM)
    request = build_request(pb.PredictStreamRequest, spec.model, spec.inputs[0], spec.parameters)
    payload = request.SerializeToString()
    tokens = Tokens()

    async def stream() -> tuple[int, dict[str, Any]]:
        first, last = 0, b""
        async for message in raw(payload, timeout=spec.deadline_s):
            if not first:
                event = pb.PredictStreamResponse.FromString(message)
                if event.HasField("chunk") and _has_text(from_value_map(event.chunk.outputs)):
                    first = time.perf_counter_ns()
            last = message
        final = pb.PredictStreamResponse.FromString(last)
        if not first or not final.HasField("result"):
            raise AssertionError("a stream without a token, or without its final result")
        return first, from_value_map(final.result.outputs)

    async def call(sequence: int) -> int:
        started = time.monotonic()
        first, final = await stream()
        tokens.add(started, int(final["usage"]["completion_tokens"]))
        return first

    async def check() -> dict[str, Any]:
        _, final = await stream()
        return {"usage": final["usage"], "text": final["choices"][0]["message"]["content"]}

    return Target([call], check, channel.close, tokens.figures)


class SseConnection:
    """One keep-alive HTTP/1.1 connection that POSTs a streamed chat request and reads
    its events as they arrive; reconnects after any failure."""

    def __init__(self, url: str, body: bytes) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def stream(self, timeout: float) -> tuple[int, dict[str, Any]]:
        """(perf_counter_ns of the first token, the last event before [DONE])."""
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange()
        except BaseException:
            self.close()  # a half-read response must not be read as the next one
            raise

    async def _exchange(self) -> tuple[int, dict[str, Any]]:
        reused = self.writer is not None
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            # the server closed the idle connection (uvicorn keeps one 5 s): as HTTP
            # clients do, send the request again on a new one
            self.close()
            return await self._exchange()
        reader = self.reader
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            raise HttpError(status, await reader.read(int(headers.get("content-length", "0"))))
        first, last, pending = 0, b"", b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            pending += await reader.readexactly(size)
            await reader.readexactly(2)
            *events, pending = pending.split(b"\n\n")
            for event in events:
                data = event.removeprefix(b"data: ")
                if data == b"[DONE]":
                    continue
                if not first and _has_text(json.loads(data)):
                    first = time.perf_counter_ns()
                last = data
        await reader.readuntil(b"\r\n")  # the empty trailer
        if not first or not last:
            raise AssertionError("a stream without a token, or without its usage")
        return first, json.loads(last)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def open_chat_sse(spec: LoadSpec) -> Target:
    body = {
        "model": spec.model,
        **spec.inputs[0],
        **spec.parameters,
        "stream": True,
        "stream_options": {"include_usage": True},  # the last event: the stream's usage
    }
    payload = json.dumps(body).encode()
    connections = [SseConnection(spec.url, payload) for _ in range(spec.concurrency)]
    tokens = Tokens()

    def on(connection: SseConnection) -> Any:
        async def call(sequence: int) -> int:
            started = time.monotonic()
            first, usage_chunk = await connection.stream(spec.deadline_s)
            tokens.add(started, int(usage_chunk["usage"]["completion_tokens"]))
            return first

        return call

    async def check() -> dict[str, Any]:
        _, usage_chunk = await connections[0].stream(spec.deadline_s)
        return {"usage": usage_chunk["usage"]}

    async def close() -> None:
        for connection in connections:
            connection.close()

    return Target([on(c) for c in connections], check, close, tokens.figures)
