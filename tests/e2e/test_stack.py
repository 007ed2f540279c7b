"""The local stack (`modelyard up`) serving the five seed graphs, as a user drives it: the
Composer API, the command line, and the README's main job itself."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from composer.spec import load_graph
from modelyard.times import seconds
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from modelyard_cli.demo import REPO
from modelyard_cli.stack import Stack

MODELYARD = str(Path(sys.executable).parent / "modelyard")
GRAPHS = REPO / "examples" / "graphs"
# The module's stack starts in its first test's setup, which that test's timeout covers:
# on two busy cores the start alone can take most of the default 120 s.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from rich.console import Console

    from modelyard_cli.graph_output import deploy_files
    from tools.demo_models import prepare_models

    prepare_models()
    running = Stack(REPO / "examples" / "stack.yaml", work_dir=tmp_path_factory.mktemp("stack"))
    try:
        running.start()
        deploy_files(running.composer, running.graph_files(), Console(quiet=True))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def composer(stack: Stack) -> Iterator[composer_pb2_grpc.ComposerStub]:
    with grpc.insecure_channel(stack.composer) as channel:
        yield composer_pb2_grpc.ComposerStub(channel)


def run(stub: composer_pb2_grpc.ComposerStub, graph: str, **inputs: Any) -> dict[str, Any]:
    request = pb.RunRequest(name=graph)
    fill_value_map(request.inputs, inputs)
    return from_value_map(stub.Run(request, timeout=60).outputs)


def test_seed_1_several_models_behind_one_call(composer: composer_pb2_grpc.ComposerStub) -> None:
    outputs = run(composer, "multi-model", text="The match ended 2-1.")
    assert outputs  # one combined result holding both models' answers
    flat = repr(outputs)
    assert "POSITIVE" in flat or "NEGATIVE" in flat  # the sentiment half
    assert "sports" in flat  # the zero-shot half ranks the candidate labels


def test_seed_2_preprocessing_then_inference(composer: composer_pb2_grpc.ComposerStub) -> None:
    graph = load_graph(GRAPHS / "sequential.yaml")
    inputs = {i.name for i in graph.inputs}
    outputs = run(composer, "sequential", **{next(iter(inputs)): "  I   LOVE it  "})
    assert "i love it" in repr(outputs)  # normalize ran first and fed the classifier
    assert "POSITIVE" in repr(outputs) or "NEGATIVE" in repr(outputs)


def test_seed_3_a_concurrent_ensemble_votes(composer: composer_pb2_grpc.ComposerStub) -> None:
    outputs = run(composer, "ensemble", text="What a wonderful day")
    assert outputs["label"] in {"POSITIVE", "NEGATIVE"}
    assert sum(outputs["votes"].values()) == 3
    assert outputs["votes"][outputs["label"]] >= 2


def test_seed_4_the_inference_graph(composer: composer_pb2_grpc.ComposerStub) -> None:
    request = pb.RunRequest(name="inference-graph")
    fill_value_map(request.inputs, {"prompt": "I have an idea!"})
    reply = composer.Run(request, timeout=60)
    outputs = from_value_map(reply.outputs)
    for model in ("gpt2", "distilgpt2"):
        assert isinstance(outputs[f"{model}_text"], str) and outputs[f"{model}_text"]
        assert outputs[f"{model}_score"]["label"] in {"POSITIVE", "NEGATIVE"}
    timeline = {t.node: t for t in reply.timeline}
    start = {node: seconds(t.start_offset) for node, t in timeline.items()}
    end = {node: start[node] + seconds(t.duration) for node, t in timeline.items()}
    # the two generators ran side by side: each started before the other finished
    assert start["gen1"] < end["gen2"] and start["gen2"] < end["gen1"]
    assert start["scores"] >= end["gen1"]
    assert {t.status for t in timeline.values()} == {pb.NODE_STATUS_OK}
    assert timeline["gen1"].workers == ["generators"] and timeline["scores"].workers
    assert timeline["gen2"].workers == ["generators-2"]  # one generator per worker


def test_seed_5_an_llm_streams_into_a_downstream_model(
    composer: composer_pb2_grpc.ComposerStub,
) -> None:
    graph = load_graph(GRAPHS / "streaming.yaml")
    # The tiny random GPT-2 almost never ends a sentence; word segments show the same
    # overlap that sentence segments show with a real model.
    for node in graph.nodes:
        if node.name == "sentiment":
            node.model.segment_delimiters = " "
    request = pb.RunStreamRequest(graph=graph)
    fill_value_map(request.inputs, {"prompt": "I have an idea!"})
    order = []
    for event in composer.RunStream(request, timeout=60):
        kind = event.WhichOneof("event")
        if kind == "chunk":
            order.append(f"chunk:{event.chunk.node}")
        elif kind == "node_finished":
            order.append(f"done:{event.node_finished.node}")
        elif kind == "result":
            outputs = from_value_map(event.result.outputs)
    assert "chunk:generate" in order
    # the downstream model answered while the LLM was still generating
    assert order.index("chunk:sentiment") < order.index("done:generate")
    assert len(outputs["sentiments"]) == len(outputs["sentences"]) >= 2
    assert " ".join(outputs["sentences"]) == outputs["text"].strip()


@pytest.mark.parametrize(
    ("graph", "inputs", "code", "message"),
    [
        ("nope", {}, grpc.StatusCode.NOT_FOUND, "graph 'nope' is not deployed"),
        ("inference-graph", {}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ("inference-graph", {"prompt": 7}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        (
            "multi-model",
            {"text": "x", "labels": []},
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidate_labels",
        ),
    ],
)
def test_bad_runs_get_a_clear_status(
    composer: composer_pb2_grpc.ComposerStub,
    graph: str,
    inputs: dict[str, Any],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        run(composer, graph, **inputs)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


def test_an_invalid_graph_is_refused_naming_the_node(
    composer: composer_pb2_grpc.ComposerStub,
) -> None:
    graph = load_graph(GRAPHS / "inference-graph.yaml")
    graph.name = "broken"
    graph.nodes[-1].map.call.inputs["text"] = "gen3.text"
    with pytest.raises(grpc.RpcError) as caught:
        composer.DeployGraph(pb.DeployGraphRequest(graph=graph), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node 'scores'" in (caught.value.details() or "")
    assert "gen3" in (caught.value.details() or "")


def test_the_graph_commands(stack: Stack) -> None:
    env = {**os.environ, "MODELYARD_COMPOSER_ADDRESS": stack.composer, "COLUMNS": "250"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MODELYARD, *args], capture_output=True, text=True, env=env, timeout=60
        )

    listed = cli("graph", "list")
    for name in ("inference-graph", "multi-model", "sequential", "ensemble", "streaming"):
        assert name in listed.stdout
    assert "flowchart LR" in cli("graph", "show", "inference-graph", "--format", "mermaid").stdout
    assert "digraph" in cli("graph", "show", "inference-graph", "--format", "dot").stdout
    assert "← gen1.text" in cli("graph", "show", "inference-graph").stdout
    ran = cli("run", "inference-graph", "-i", "prompt=I have an idea!")
    assert ran.returncode == 0, ran.stderr
    assert "timeline" in ran.stdout and "gpt2_score" in ran.stdout
    missing = cli("graph", "delete", "nope")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_runs_go_on_while_the_control_plane_is_down(
    stack: Stack, composer: composer_pb2_grpc.ComposerStub
) -> None:
    assert stack.control_plane_process is not None
    stack.control_plane_process.kill()
    stack.control_plane_process.wait(10)
    outputs = run(composer, "ensemble", text="Still here")
    assert outputs["label"] in {"POSITIVE", "NEGATIVE"}


def _peak_rss_kib(status: str) -> int:
    """VmHWM from /proc/<pid>/status; 0 once the process has exited (a zombie's status has
    no memory lines: it may end between the poll and the read)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_the_readme_main_job(tmp_path: Path) -> None:
    """`make demo`'s command, watched from outside: it serves the seed graph, and its
    supervisor never loads torch (the workers do), so it stays small."""
    process = subprocess.Popen(
        [MODELYARD, "up", "examples/stack.yaml", "--run", "inference-graph",
         "--input", "prompt=I have an idea!", "--once", "--work-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    libraries: set[str] = set()
    peak_rss_kib = 0
    try:
        while process.poll() is None:
            with contextlib.suppress(OSError):  # it may exit between poll and read
                maps = Path(f"/proc/{process.pid}/maps").read_text()
                libraries |= {
                    line.rsplit("/", 1)[-1] for line in maps.splitlines() if ".so" in line
                }
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak_rss_kib = max(peak_rss_kib, _peak_rss_kib(status))
            time.sleep(0.2)
    except BaseException:
        process.terminate()  # a failed watch must not leave the stack running into later tests
        process.communicate(timeout=60)
        raise
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    for expected in ("deployed graph inference-graph", "gpt2_text", "distilgpt2_score",
                     "timeline", "stack stopped"):  # fmt: skip
        assert expected in stdout
    assert libraries, "the supervisor's memory map was never read"
    assert not {lib for lib in libraries if "torch" in lib}, "`modelyard up` loaded torch"
    print(f"modelyard up supervisor: peak RSS {peak_rss_kib / 1024:.0f} MiB")
    assert peak_rss_kib < 150 * 1024  # torch alone would add about 400 MiB
