"""Real local HTTP servers standing in for registered third-party APIs.

    with FakeApi("a") as api:
        url = api.url("/good")      # http://127.0.0.1:<port>/good

Each is a `ThreadingHTTPServer` on 127.0.0.1, port 0, in a daemon thread, so it answers
whatever event loop the test runs; with `tls` (a server SSLContext) it speaks HTTPS.
Paths (all POST, bodies JSON):
- /good: `{"data": {"items": [{"attributes": {"answer": "<name>: <prompt>"}}]}}`, the
  prompt read from the request body's "prompt" field (the templates in the tests send it);
- /slow: answers as /good once `release()` is called (or after 30 s);
- /error: HTTP 500;  /wrong: a body without `data.items` (`{"unexpected": true}`);
- /big: a JSON string of `big_bytes` characters;  /notjson: a body that is not JSON;
- /flaky: as /good while `failing` is False, HTTP 500 while it is True;
- /redirect-same: 307 to /good;  /redirect-loop: 307 to itself;
- /redirect-other: 307 to the same port on 127.0.0.2 (another host; nothing listens).
Every request is recorded (`requests`: path, headers with lower-case names, a repeated
one's values joined by ", ", parsed body).
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class FakeApi:
    def __init__(
        self, name: str, *, big_bytes: int = 2 * 1024 * 1024, tls: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.big_bytes = big_bytes
        self.failing = False
        self.requests: list[Received] = []
        self._released = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        if tls is not None:  # HTTPS with the certificate `tls` holds
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "http" if tls is None else "https"
        self.port = self._server.server_address[1]
        # a short poll: shutdown() waits for one, at every test's teardown
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        """The paths called so far, in order."""
        return [r.path for r in list(self.requests)]

    def release(self) -> None:
        """Lets every waiting (and later) /slow call answer."""
        self._released.set()

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(self, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
        good = {"data": {"items": [{"attributes": {"answer": f"{self.name}: {_prompt(body)}"}}]}}
        if path == "/slow":
            self._released.wait(timeout=30)
            return _json(200, good)
        if path == "/error":
            return _json(500, {"error": "broken"})
        if path == "/wrong":
            return _json(200, {"unexpected": True})
        if path == "/big":
            return _json(200, "x" * self.big_bytes)
        if path == "/notjson":
            return 200, {"content-type": "text/plain"}, b"<html>hello</html>"
        if path == "/flaky" and self.failing:
            return _json(500, {"error": "flaking"})
        if path == "/redirect-same":
            return 307, {"location": "/good"}, b""
        if path == "/redirect-loop":
            return 307, {"location": "/redirect-loop"}, b""
        if path == "/redirect-other":
            return 307, {"location": f"http://127.0.0.2:{self.port}/good"}, b""
        return _json(200, good)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (the timeout tests do): nothing to print


def _prompt(body: Any) -> Any:
    return body.get("prompt") if isinstance(body, dict) else None


def _json(status: int, document: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(document).encode()


def _handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do: the pool reuses it
        disable_nagle_algorithm = True  # headers and body go out apart: no 40 ms wait

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            headers: dict[str, str] = {}
            for name, value in self.headers.items():  # a repeated one as HTTP joins them
                joined = headers.get(name.lower())
                headers[name.lower()] = value if joined is None else f"{joined}, {value}"
            api.requests.append(Received(self.path, headers, body))
            status, headers, content = api.answer(self.path, body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows the test's own output

    return Handler
