"""composer_tracing: what tracing costs the seed inference graph's throughput at c=16.

Three stacks of the same stack file run side by side, alike but for tracing: `off` (no
OTLP endpoint, so no provider, interceptor or exporter), `sampled_100` (every trace
recorded and exported) and `sampled_10` (10% of the traces, chosen by the composer, where
they start; the workers follow its decision). Both traced stacks export over OTLP gRPC to
a local receiver (`bench.common.otlp_sink`) in this process. Rounds alternate the three
(A B C, C B A, ...), so drift in the machine's load hits all alike.

Goals: at most 10% throughput lost at 100% sampling, at most 2% at 10%, and nothing
measurable when off. "Off" has no baseline a run could measure (the code without tracing
is gone), so its check is the CPU time of what the off path still executes per graph run,
timed in this process (`off_path_us_per_run`: the composer's run and node scopes, the
attempts, the trace response, each worker call's records and batch), against the run's
server CPU: under 1%. It is an upper bound: the run and node scopes also keep the
composer's metrics, which are on whether tracing is or not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry

from bench.common.load.driver import Level
from bench.common.otlp_sink import VARIANT, OtlpSink
from bench.common.stats import alternate, clean, ratio
from bench.composer.graph import GRAPH, modelyard_spec
from bench.composer.run import Run, without_sample
from bench.composer.stacks import modelyard_stacks

LEVEL = Level(16, 640, 64, 60.0)
SAMPLED = {"sampled_100": 1.0, "sampled_10": 0.1}
MAX_LOSS = {"sampled_100": 0.10, "sampled_10": 0.02}
OFF_MAX_SHARE = 0.01  # of a run's server CPU
OFF_REPEATS = 2000
WORKER_CALLS = 4  # per run of the seed graph: gen1, gen2, and the map's two bert calls


def environments(sink: OtlpSink) -> dict[str, dict[str, str]]:
    """Each stack's tracing, as an operator sets it: the standard OTEL_* variables."""
    traced = {
        name: {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio_),
            "OTEL_RESOURCE_ATTRIBUTES": f"{VARIANT}={name}",
        }
        for name, ratio_ in SAMPLED.items()
    }
    return {"off": {}, **traced}


def tracing(run: Run, stack_file: Path) -> None:
    """The three stacks of `stack_file` (its graphs include the seed inference graph)."""
    with OtlpSink() as sink:
        with modelyard_stacks(stack_file, run.workdir / "tracing", environments(sink)) as procs:
            level = run.level(LEVEL)
            results = alternate(
                {name: run.measurer(modelyard_spec(level, p)) for name, p in procs.items()},
                run.rounds,
            )
        # the stacks have stopped: every service flushed the spans it still held
        spans = sink.spans()
    run.recorder.emit(record(level, results, spans, off_path_us_per_run()))


def record(
    level: Level,
    results: dict[str, dict[str, Any]],
    spans: dict[str, int],
    off_us: float,
) -> dict[str, Any]:
    off = results["off"]
    loss = {
        name: round(1.0 - (ratio(results[name]["throughput_rps"], off["throughput_rps"]) or 0.0), 4)
        for name in SAMPLED
    }
    off_share = (
        off_us / 1000.0 / off["server_cpu_ms_per_req"] if off["server_cpu_ms_per_req"] else 0.0
    )
    checks = {f"{name}: 0 failed requests": clean(results[name]) for name in results}
    for name, limit in MAX_LOSS.items():
        checks[f"{name}: throughput loss <= {limit:.0%}"] = loss[name] <= limit
    checks[f"off: the off path costs < {OFF_MAX_SHARE:.1%} of a run's server CPU"] = (
        off_share < OFF_MAX_SHARE
    )
    requests = {name: r["requests"] for name, r in results.items()}
    return {
        "bench": "composer_tracing",
        "scenario": f"seed inference graph, c={level.concurrency}: tracing off, 100%, 10%",
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        **{name: {"name": _described(name), **without_sample(r)} for name, r in results.items()},
        "baseline": {"name": "the same stack with tracing off", "variant": "off"},
        "throughput_loss": loss,
        "p99_ratio": {name: ratio(results[name]["p99_ms"], off["p99_ms"]) for name in SAMPLED},
        "server_cpu_ratio": {
            name: ratio(results[name]["server_cpu_ms_per_req"], off["server_cpu_ms_per_req"])
            for name in SAMPLED
        },
        "spans_received": {name: spans.get(name, 0) for name in SAMPLED},
        # every graph run a stack answered (warm-ups included), spans shared among them
        "spans_per_run": {
            name: ratio(spans.get(name, 0), requests[name] * _runs_per_request(level))
            for name in SAMPLED
        },
        "off_path_us_per_run": round(off_us, 2),
        "off_path_share_of_server_cpu": round(off_share, 6),
        "goal": "throughput loss <= 10% at 100% sampling, <= 2% at 10%, none measurable off",
        "checks": checks,
        "pass": all(checks.values()),
    }


def _described(variant: str) -> str:
    if variant == "off":
        return f"Composer.Run of {GRAPH}, tracing off (no endpoint)"
    share = SAMPLED[variant]
    return f"Composer.Run of {GRAPH}, {share:.0%} of traces recorded, exported over OTLP"


def _runs_per_request(level: Level) -> float:
    """Graph runs per measured request, counting the warm-up at the same concurrency."""
    return (level.requests + level.warmup) / level.requests


def off_path_us_per_run() -> float:
    """Microseconds of what a graph run of the seed graph executes for tracing when it is
    off: the composer's run and node scopes (no spans, but their metrics too), its attempts
    (untracked), the trace response, and each worker call's span records and batch."""
    from composer.telemetry import ComposerTelemetry
    from modelyard.attempts import Attempt, Untracked
    from modelyard.clock import SYSTEM_CLOCK
    from modelyard.v1 import graph_pb2
    from modelyard_server.telemetry.spans import trace_response
    from workers.call_attributes import record_call, record_usage
    from workers.model_spans import ModelSpans

    # the run's and nodes' spans share their `with` with the metrics, which are on either
    # way: the composer's telemetry is timed whole, metrics included (an overestimate)
    composer = ComposerTelemetry(None, CollectorRegistry())
    graph = graph_pb2.Graph(name="g")
    nodes = [graph_pb2.Node(name=name) for name in ("gen1", "gen2", "texts", "scores")]
    attempts = Untracked()
    model = ModelSpans(None, "m", SYSTEM_CLOCK)

    def one_run() -> None:
        trace_response()
        with composer.run(graph, inline=False) as observer:
            for node in nodes:
                with observer.node(node):
                    pass
            for number in range(1, WORKER_CALLS + 1):
                attempt = Attempt("m", "w", "a", number, streaming=False)
                with attempts.track(attempt) as tracked, tracked.active():
                    # the worker's side (off: no interceptor, so no call span either)
                    span = trace.get_current_span()
                    record_call(span, model="m", device="cpu")
                    served = model.arrived()
                    with model.batch([served]):
                        pass
                    model.finished(served)
                    record_usage(span, {"text": "x"})

    for _ in range(100):  # warm
        one_run()
    # CPU time, as the runs' server CPU is measured: a busy machine makes wall time longer
    started = time.process_time()
    for _ in range(OFF_REPEATS):
        one_run()
    return (time.process_time() - started) / OFF_REPEATS * 1e6
