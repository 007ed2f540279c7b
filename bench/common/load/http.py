"""`http`: POST of one JSON body to `url`, one keep-alive connection per coroutine.

A minimal asyncio-streams HTTP/1.1 client, stdlib only: the project venv has neither
aiohttp nor httpx, and this client is cheaper than both, which can only favour the HTTP
baseline (BentoML) on a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from bench.common.load.phase import HttpError
from bench.common.load.spec import LoadSpec
from bench.common.load.target import Call, Target, check_outputs


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


async def open_http(spec: LoadSpec) -> Target:
    body = json.dumps(spec.inputs[0]).encode()
    connections = [HttpConnection(spec.url, body) for _ in range(spec.concurrency)]

    def on(connection: HttpConnection) -> Call:
        async def call(sequence: int) -> None:
            await connection.call(spec.deadline_s)

        return call

    async def check() -> dict[str, Any]:
        outputs: dict[str, Any] = json.loads(await connections[0].call(spec.deadline_s))
        return check_outputs(outputs, spec.expect)

    async def close() -> None:
        for connection in connections:
            connection.close()

    return Target([on(c) for c in connections], check, close)
