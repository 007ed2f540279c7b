"""`python -m bench.http_api.api_server --host H --port 0 --port-file F`: the stand-in
third-party API, a bare ASGI app on uvicorn answering every request with one fixed JSON
document (the body it was sent is read and dropped)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from modelyard_server.portfile import write_port_file

ANSWER = "fixed answer"
BODY = json.dumps({"data": {"items": [{"attributes": {"answer": ANSWER}}]}}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_api.api_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args()
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and Nagle would
    # hold each answer ~40 ms behind the client's delayed ACK (the gateway bench's finding)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)  # before the port file: a caller that reads it finds it listening
    write_port_file(args.port_file, sock.getsockname()[1])
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
