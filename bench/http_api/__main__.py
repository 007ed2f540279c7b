"""`python -m bench.http_api`: see the package's docstring and bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc.aio
from google.protobuf.duration_pb2 import Duration

import bench.http_api
from bench.common.errors import BenchError
from bench.common.paths import RESULTS_DIR
from bench.common.quiet import Quiet
from bench.common.results import Recorder, machine_info
from bench.common.servers import Program, controlplane, serving
from bench.common.stats import ratio, rounds_summary
from bench.http_api.measure import BODY_TEMPLATE, Level, Setup, measure
from modelyard.routed_client import RoutedClient
from modelyard.v1 import controlplane_pb2 as cp
from modelyard.v1 import controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_server.http_api.caller import HttpApiCaller
from modelyard_server.http_api.settings import HttpApiSettings

RESULTS = RESULTS_DIR / "http_api.json"
MODEL = "answers"
GOAL_ADDED_MS = 1.0
# the control plane may register and health-check an API on loopback
ENV = {
    "MODELYARD_CONTROLPLANE_HTTP_API__ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    "MODELYARD_CONTROLPLANE_HTTP_API__HEALTH_INTERVAL_S": "0.5",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_api",
        description=bench.http_api.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per level")
    parser.add_argument("--requests", type=int, default=2000, help="calls per round at c=1")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--smoke", action="store_true", help="one round of a few calls: does the bench run?"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    os.environ.update(ENV)  # the control plane inherits it
    recorder = Recorder()
    recorder.emit(machine_info("httpx", "httpcore", "jmespath", "uvicorn"))
    rounds = 1 if args.smoke else max(1, args.rounds)
    requests = 20 if args.smoke else args.requests
    quiet = Quiet(budget_s=0.0) if args.smoke else Quiet(60.0, max_attempts=2, calm_wait_s=2.0)
    levels = [
        Level(1, requests, warmup=5 if args.smoke else 200),
        Level(16, requests * 2, warmup=16 if args.smoke else 400),
    ]
    with tempfile.TemporaryDirectory(prefix="http-api-bench-") as tmp:
        workdir = Path(tmp)
        with (
            EtcdServer() as etcd,
            serving("controlplane", controlplane(etcd.endpoint), workdir) as plane,
            serving("api", Program("bench.http_api.api_server"), workdir) as api,
        ):
            setup = Setup(plane.address, MODEL, f"http://{api.address}/v1/answer", api.pid)
            asyncio.run(_register(setup))
            for level in levels:
                recorder.emit(_record(_compare(setup, level, rounds, quiet)))
        recorder.finish(args.output)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


async def _register(setup: Setup) -> None:
    """Registers the API and waits until a routed client has it in the endpoint set."""
    timeout = Duration()
    timeout.FromSeconds(30)
    api = cp.HttpApi(
        url_template=setup.api_url,
        body_template=BODY_TEMPLATE,
        response_path="data.items[].attributes.answer",
        timeout=timeout,
    )
    async with grpc.aio.insecure_channel(setup.control_plane) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
        await stub.RegisterModel(
            cp.RegisterModelRequest(model=setup.model, owner="bench", http_api=api), timeout=30
        )
    caller = HttpApiCaller(HttpApiSettings(allowed_networks=["127.0.0.1/32"]))
    async with RoutedClient([setup.control_plane], outside_apis=caller) as client:
        if not await client.wait_for_endpoints(setup.model, timeout=60):
            raise BenchError("the registered API never joined the endpoint set")
    await caller.aclose()


def _compare(setup: Setup, level: Level, rounds: int, quiet: Quiet) -> dict[str, Any]:
    """Direct and routed in alternating rounds (direct first, then routed first, ...)."""
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], "routed": []}
    for index in range(rounds):
        for kind in ("direct", "routed") if index % 2 == 0 else ("routed", "direct"):
            runs[kind].append(quiet.measure(functools.partial(measure, kind, setup, level)))
    out: dict[str, Any] = {"concurrency": level.concurrency}
    for kind, results in runs.items():
        summary = rounds_summary(results)
        summary["mean_ms"] = statistics.median(r["mean_ms"] for r in results)
        summary["client_cpu_ms_per_req"] = statistics.median(
            r["client_cpu_ms_per_req"] for r in results
        )
        out[kind] = summary
    # added per round pair, then the median: a round disturbed by other work cancels out
    added = [r["p50_ms"] - d["p50_ms"] for d, r in zip(runs["direct"], runs["routed"], strict=True)]
    out["added_p50_ms"] = round(statistics.median(added), 3)
    out["added_p50_ms_rounds"] = [round(a, 3) for a in added]
    out["added_mean_ms"] = round(out["routed"]["mean_ms"] - out["direct"]["mean_ms"], 3)
    out["added_client_cpu_ms_per_req"] = round(
        out["routed"]["client_cpu_ms_per_req"] - out["direct"]["client_cpu_ms_per_req"], 4
    )
    out["throughput_ratio"] = ratio(
        out["routed"]["throughput_rps"], out["direct"]["throughput_rps"]
    )
    return out


def _record(compared: dict[str, Any]) -> dict[str, Any]:
    """One level's line; the goal is at c=1 only (c=16 is reported for what it shows)."""
    checks = {
        "every_call_answered": compared["direct"]["errors"] == compared["routed"]["errors"] == 0
    }
    goal = "every call answered (reported: what concurrency adds)"
    if compared["concurrency"] == 1:
        checks["added_p50_within_1ms"] = compared["added_p50_ms"] <= GOAL_ADDED_MS
        goal = (
            f"a registered API through RoutedClient adds <= {GOAL_ADDED_MS:g} ms to the "
            "median latency of calling it directly with httpx"
        )
    return {
        "bench": "http_api",
        "scenario": f"http_api_c{compared['concurrency']}",
        "goal": goal,
        "baseline": "httpx.AsyncClient.post to the same API, response.json(), the answer "
        "taken by hand",
        **compared,
        "checks": checks,
        "pass": all(checks.values()),
    }


if __name__ == "__main__":
    sys.exit(main())
