"""The load generator's HTTP kind, the one smoke runs leave out (it drives BentoML): against
a stdlib JSON echo server, both keep-alive framings a server may answer with."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.common.load.driver import run_load
from tests.bench.smoke import REPO, assert_has


class EchoJson(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as BentoML serves
    chunked = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = json.dumps({"echo": json.loads(body), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(reply) // 2
            for part in (reply[:half], reply[half:], b""):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        else:
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output stays the test's


class ChunkedEchoJson(EchoJson):
    chunked = True


@pytest.fixture(params=[EchoJson, ChunkedEchoJson], ids=["content-length", "chunked"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/run"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_load_answers_every_request_and_keeps_the_checked_sample(url: str) -> None:
    inputs = {"prompt": "I have an idea!"}
    result = run_load(
        {
            "kind": "http",
            "url": url,
            "inputs": [inputs],
            "concurrency": 4,
            "requests": 40,
            "warmup": 4,
            "expect": {"path": "/run"},
        }
    )
    assert (result["requests"], result["ok"], result["errors"]) == (40, 40, 0)
    assert result["sample"] == {"echo": inputs, "path": "/run"}
    assert_has(result, "p50_ms", "p99_ms", "throughput_rps", "other_cpu_pct", "server_cpu_pct")


def test_a_spec_with_an_unknown_field_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.common.load", json.dumps({"kind": "http", "urll": "x"})],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "unknown spec field(s): urll" in done.stderr
