"""One trace per request through the real processes (`modelyard up`'s Stack: etcd, a control
plane, three workers, a composer, each its own process) exporting over OTLP, as the
environment says (OTEL_EXPORTER_OTLP_ENDPOINT), to a real receiver standing in for Jaeger.

`modelyard run` of the seed inference graph prints a trace id; that trace holds the
composer's call, the run, a span per node, each routed attempt, and each worker's Predict
with its queue wait and inference as children, across every process; each batch span links
to the requests it served; attributes say model, replica, batch size and device, and for
generation the time to first token and the token counts. Then /metrics of every service
shows the counts of the runs made.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from modelyard.composer_client import ComposerClient, Result
from modelyard_cli.demo import REPO
from modelyard_cli.stack import COMPOSER, CONTROL_PLANE, Stack, worker_service
from tests.support.otlp import OtlpReceiver, ReceivedSpan

# The module's stack starts in its first test's setup, which that test's timeout covers:
# on two busy cores the start alone can take most of the default 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODELYARD = str(Path(sys.executable).parent / "modelyard")
PROMPT = "I have an idea!"
GRAPH = "inference-graph"
WORKERS = ("generators", "generators-2", "classifiers")
COMPOSER_SERVICE = "modelyard-composer"
PREDICT = "/modelyard.v1.Predict/Predict"
PREDICT_STREAM = "/modelyard.v1.Predict/PredictStream"
# a stream consumer, so gpt2 is called with PredictStream: the time to its first token
STREAMED = {
    "name": "streamed",
    "inputs": {"prompt": "string"},
    "nodes": [
        {"name": "generate", "model": "gpt2", "inputs": {"text": "inputs.prompt"},
         "parameters": {"max_new_tokens": 8, "do_sample": False}},
        {"name": "score", "model": "bert", "inputs": {"text": "generate.text"},
         "stream": "segment"},
    ],
    "outputs": {"text": "generate.text", "scores": "score.results"},
}  # fmt: skip
COMPLETION = {
    "name": "completion",
    "inputs": {"prompt": "string"},
    "nodes": [
        {"name": "complete", "model": "complete", "inputs": {"prompt": "inputs.prompt"},
         "parameters": {"max_tokens": 5, "temperature": 0}},
    ],
    "outputs": {"usage": "complete.usage"},
}  # fmt: skip


def worker_name(worker_id: str) -> str:
    return f"modelyard-worker-{worker_id}"


def stack_file(folder: Path) -> Path:
    """The seed inference graph's models (and an llm/v1/completions one, which reports its
    token usage), on three workers as examples/stack.yaml places them."""
    from tools.demo_models import prepare_models

    paths = prepare_models()
    batched = {"max_batch_size": 8, "max_wait_ms": 2}
    workers = [
        {"worker_id": "generators", "models": [
            {"name": "gpt2", "source": str(paths["tiny-gpt2"]), "task": "text-generation",
             "batching": batched},
            {"name": "complete", "source": str(paths["tiny-gpt2"]),
             "task": "llm/v1/completions"},
        ]},
        {"worker_id": "generators-2", "models": [
            {"name": "distilgpt2", "source": str(paths["tiny-distilgpt2"]),
             "task": "text-generation", "batching": batched},
        ]},
        {"worker_id": "classifiers", "models": [
            {"name": "bert", "source": str(paths["tiny-bert-sentiment"]),
             "batching": {"max_batch_size": 32, "max_wait_ms": 2}},
        ]},
    ]  # fmt: skip
    graphs = [str(REPO / "examples" / "graphs" / "inference-graph.yaml")]
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump({"workers": workers, "graphs": graphs}))
    return path


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with `values` and no other OTEL_* variable (the stack's processes inherit
    it), restored afterwards."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from rich.console import Console

    from modelyard_cli.graph_output import deploy_files

    folder = tmp_path_factory.mktemp("traced-stack")
    running = Stack(stack_file(folder), work_dir=folder / "state")
    try:
        # what a user does: the standard variable, nothing else (and spans exported within
        # 100 ms rather than the default 5 s, so the test does not wait)
        with environment(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100"
        ):
            running.start()
        deploy_files(running.composer, running.graph_files(), Console(quiet=True))
        yield running
    finally:
        running.stop()


def modelyard_run(stack: Stack) -> tuple[str, str]:
    """`modelyard run` of the seed graph: its output, and the trace id it printed."""
    done = subprocess.run(
        [MODELYARD, "run", GRAPH, "-i", f"prompt={PROMPT}", "--composer", stack.composer],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    traces = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("trace ")]
    assert len(traces) == 1, done.stdout
    assert done.stdout.splitlines()[0].startswith("trace "), "the trace id comes first"
    return done.stdout, traces[0]


class Trace:
    """The spans of one trace, and the batch spans (each a trace of its own) linked to it."""

    def __init__(self, spans: list[ReceivedSpan], trace_id: str) -> None:
        self.spans = [s for s in spans if s.trace_id == trace_id]
        self.by_id = {s.span_id: s for s in self.spans}
        ids = {(trace_id, s.span_id) for s in self.spans}
        self.batches = [s for s in spans if ids & set(s.links)]

    def named(self, name: str, service: str | None = None) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name and service in (None, s.service)]

    def parent(self, span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_span_id in self.by_id, f"{span.name}: its parent is not in the trace"
        return self.by_id[span.parent_span_id]

    def children(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    def worker_calls(self, method: str = PREDICT) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == method and s.kind == "SERVER"]


def wait_for_trace(
    receiver: OtlpReceiver,
    trace_id: str,
    worker_calls: int,
    method: str = PREDICT,
    *,
    batched: bool = True,
) -> Trace:
    """The trace once its composer call and `worker_calls` worker calls, each with its
    queue wait and inference, have arrived (and a batch span linked to them, when the
    models are `batched`)."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        trace = Trace(spans, trace_id)
        calls = trace.worker_calls(method)
        served = [s for s in trace.spans if s.service == COMPOSER_SERVICE and s.kind == "SERVER"]
        parts = sum(len(trace.children(call)) == 2 for call in calls)
        linked = bool(trace.batches) or not batched
        return len(calls) == worker_calls == parts and bool(served) and linked

    return Trace(receiver.wait_for(complete, timeout=60), trace_id)


def test_modelyard_run_prints_the_id_of_one_trace_across_every_process(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    output, trace_id = modelyard_run(stack)
    assert "gpt2_text" in output  # the run itself went as always
    # gen1 (gpt2), gen2 (distilgpt2), and the map's two bert calls
    trace = wait_for_trace(receiver, trace_id, worker_calls=4)
    assert {s.service for s in trace.spans} == {COMPOSER_SERVICE, *map(worker_name, WORKERS)}

    # the composer: its call, the run, a span per node
    (served,) = trace.named("/modelyard.v1.Composer/RunStream", COMPOSER_SERVICE)
    assert served.parent_span_id is None  # the client is not traced: the trace starts here
    (run,) = trace.named(f"run {GRAPH}")
    assert trace.parent(run) == served and run.attributes["modelyard.graph"] == GRAPH
    nodes = {s.attributes["modelyard.node"]: s for s in trace.spans if s.name.startswith("node ")}
    assert set(nodes) == {"gen1", "gen2", "texts", "scores"}
    assert all(trace.parent(node) == run for node in nodes.values())
    assert [nodes[n].attributes.get("modelyard.model") for n in ("gen1", "gen2", "scores")] == [
        "gpt2", "distilgpt2", "bert",
    ]  # fmt: skip

    # node -> attempt (replica, attempt number) -> the call -> the worker's Predict
    models = {"gpt2": "generators", "distilgpt2": "generators-2", "bert": "classifiers"}
    for call in trace.worker_calls():
        model = call.attributes["modelyard.model"]
        assert call.service == worker_name(models[model])
        client = trace.parent(call)
        assert (client.service, client.kind, client.name) == (COMPOSER_SERVICE, "CLIENT", PREDICT)
        attempt = trace.parent(client)
        assert attempt.name == f"attempt {model}"
        assert attempt.attributes["modelyard.replica"] == models[model]
        assert attempt.attributes["modelyard.attempt"] == 1
        assert trace.parent(attempt).name in ("node gen1", "node gen2", "node scores")

        # the worker's Predict: queue wait, then inference, as its children
        assert call.attributes["modelyard.device"] == "cpu"
        assert call.attributes["modelyard.batch_size"] >= 1
        assert call.attributes["modelyard.queue_wait_seconds"] >= 0
        parts = {child.name: child for child in trace.children(call)}
        assert set(parts) == {"queue wait", "inference"}
        assert parts["queue wait"].service == parts["inference"].service == call.service

    # each batch one span, linked to every request it served (these, and any other run's)
    for call in trace.worker_calls():
        (batch,) = [b for b in trace.batches if (trace_id, call.span_id) in b.links]
        model = call.attributes["modelyard.model"]
        assert batch.name == f"batch {model}" and batch.service == call.service
        assert batch.trace_id != trace_id  # a batch belongs to no one request
        assert batch.attributes["modelyard.batch_size"] == len(batch.links)
        assert batch.attributes["modelyard.model"] == model
        assert call.attributes["modelyard.batch_size"] == len(batch.links)


def test_generation_spans_carry_the_time_to_first_token_and_the_token_counts(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    with ComposerClient(stack.composer, timeout=60) as client:
        streamed = client.run(STREAMED, prompt=PROMPT)
        completed = client.run(COMPLETION, prompt=PROMPT)
    assert streamed.trace_id and completed.trace_id

    streamed_trace = wait_for_trace(receiver, streamed.trace_id, 1, PREDICT_STREAM, batched=False)
    (generation,) = streamed_trace.worker_calls(PREDICT_STREAM)
    assert generation.attributes["modelyard.model"] == "gpt2"
    assert generation.attributes["modelyard.time_to_first_token_seconds"] > 0

    # (batching is off for this model: no batch span)
    (completion,) = wait_for_trace(receiver, completed.trace_id, 1, batched=False).worker_calls()
    usage: dict[str, Any] = completed.outputs["usage"]
    assert completion.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert completion.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] > 0


# -- /metrics of every service -------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Sample]:
    """Every sample at `url` (OpenMetrics, as Prometheus asks), by name and labels."""
    request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    }


def value(samples: dict[Any, Sample], name: str, **labels: str) -> float:
    sample = samples.get((name, tuple(sorted(labels.items()))))
    return 0.0 if sample is None else sample.value


def test_every_service_serves_metrics_that_count_the_runs(stack: Stack) -> None:
    urls = {
        "composer": stack.metrics[COMPOSER],
        "controlplane": stack.metrics[CONTROL_PLANE],
        **{w: stack.metrics[worker_service(w)] for w in WORKERS},
    }
    before = {service: scrape(url) for service, url in urls.items()}
    runs = 3
    with ComposerClient(stack.composer, timeout=60) as client:
        results = [client.run(GRAPH, prompt=PROMPT) for _ in range(runs)]
    assert all(isinstance(r, Result) and r.trace_id for r in results)
    after = {service: scrape(url) for service, url in urls.items()}

    def grew(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    ok = {"code": "OK"}
    # the composer: its calls, and each run and node timed by graph and node
    composer_run = {"method": "/modelyard.v1.Composer/Run", "model": "", **ok}
    assert grew("composer", "modelyard_composer_requests_total", **composer_run) == runs
    assert grew("composer", "modelyard_composer_run_seconds_count", graph=GRAPH, **ok) == runs
    for node in ("gen1", "gen2", "texts", "scores"):
        node_labels = {"graph": GRAPH, "node": node, "status": "ok"}
        assert grew("composer", "modelyard_composer_node_seconds_count", **node_labels) == runs
    assert value(after["composer"], "modelyard_composer_runs_in_flight", graph=GRAPH) == 0

    # the workers: a call per node (two per run for bert: the map), model calls in batches
    for worker, model, calls in (
        ("generators", "gpt2", runs), ("generators-2", "distilgpt2", runs),
        ("classifiers", "bert", 2 * runs),
    ):  # fmt: skip
        labels = {"method": PREDICT, "model": model, **ok}
        assert grew(worker, "modelyard_worker_requests_total", **labels) == calls
        assert grew(worker, "modelyard_worker_queue_wait_seconds_count", model=model) == calls
        batched = grew(worker, "modelyard_worker_batch_size_sum", model=model)
        assert batched == calls  # every request in exactly one model call
        assert value(after[worker], "modelyard_worker_model_state", model=model, state="ready")
        assert value(after[worker], "modelyard_worker_in_flight", model=model) == 0
        assert value(after[worker], "modelyard_worker_queue_depth", model=model) == 0
        # latencies point at a trace: the exemplar of some bucket is one of these runs' ids
        exemplars = {
            sample.exemplar.labels["trace_id"]
            for (name, _), sample in after[worker].items()
            if name == "modelyard_worker_request_seconds_bucket" and sample.exemplar
        }
        assert exemplars & {r.trace_id for r in results}, worker

    # the control plane: it leads, and each model's endpoint set holds its one replica
    assert value(after["controlplane"], "modelyard_controlplane_leader") == 1
    for model in ("gpt2", "distilgpt2", "bert", "complete"):
        assert value(after["controlplane"], "modelyard_controlplane_endpoints", model=model) == 1
    assert value(after["controlplane"], "modelyard_controlplane_endpoint_subscribers") >= 3
    reconciled = value(
        after["controlplane"], "modelyard_controlplane_reconcile_seconds_count", result="ok"
    )
    assert reconciled >= len(WORKERS)
