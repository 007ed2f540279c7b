"""composer_stream: time to the first downstream result of a streaming graph.

The tiny random GPT-2 almost never emits '.', '!', '?' or a newline, so
examples/graphs/streaming.yaml as written (default delimiters) yields ONE segment and
streaming cannot answer early. The goal is measured on an inline variant with word
segments (`segment_delimiters: " "`) and 48 new tokens: RunStream, request -> first
NodeChunk of `sentiment`; baseline: the same graph with `stream` unset, request ->
`sentiment`'s NodeFinished. A second, informational line runs the deployed example as is.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import yaml

from bench.common.load.driver import Level
from bench.common.paths import REPO
from bench.common.stats import alternate, clean, ratio, rounds_summary
from bench.composer.run import PROMPT, Run, without_sample
from bench.composer.stacks import StackProcs

DELIMITERS = " "
LEVEL = Level(1, 24, 3, 30.0)
GOAL = 0.5
EXAMPLE = REPO / "examples" / "graphs" / "streaming.yaml"


def streaming_graphs() -> tuple[dict[str, Any], dict[str, Any]]:
    """The example with word segments (streamed), and the same without `stream`."""
    streamed = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    streamed["name"] = "streaming-words"
    nodes = {node["name"]: node for node in streamed["nodes"]}
    nodes["generate"]["parameters"]["max_new_tokens"] = 48
    nodes["sentiment"]["segment_delimiters"] = DELIMITERS
    plain = copy.deepcopy(streamed)
    plain["name"] = "streaming-off"
    for node in plain["nodes"]:
        node.pop("stream", None)
        node.pop("segment_delimiters", None)
    # without stream, sentiment reads the whole text once: it has no segments output
    plain["outputs"] = {"text": "generate.text", "sentiment": "sentiment"}
    return streamed, plain


def stream(run: Run, procs: StackProcs) -> None:
    streamed, plain = streaming_graphs()
    level = run.level(LEVEL)
    common: dict[str, Any] = {
        "kind": "stream",
        "address": procs.composer,
        "inputs": [{"prompt": PROMPT}],
        "node": "sentiment",
        "server_pids": list(procs.pids.values()),
    }
    specs = {
        "streamed": level.spec(graph_inline=streamed, until="chunk", **common),
        "not_streamed": level.spec(graph_inline=plain, until="finished", **common),
    }
    results = alternate({name: run.measurer(spec) for name, spec in specs.items()}, run.rounds)
    run.recorder.emit(record(results["streamed"], results["not_streamed"], streamed))
    # context: the example as written (default delimiters), which yields a single segment
    as_is = level.spec(graph="streaming", until="chunk", **common)
    deployed = rounds_summary([run.measure(as_is)])
    run.recorder.emit(as_is_record(deployed, results["not_streamed"]))
    if run.profile:
        from bench.composer.profile import profile_stack

        run.recorder.emit(
            profile_stack(procs, as_is, run.workdir, "streaming-as-deployed", seconds=6)
        )
        run.recorder.emit(
            profile_stack(procs, specs["not_streamed"], run.workdir, "streaming-off", seconds=6)
        )


def record(
    streamed: dict[str, Any], plain: dict[str, Any], graph_file: dict[str, Any]
) -> dict[str, Any]:
    first = ratio(streamed["p50_ms"], plain["p50_ms"])
    checks = {
        "no errors": clean(streamed) and clean(plain),
        "several segments streamed": streamed["sample"].get("sentiment_chunks", 0) > 1,
        f"first downstream result p50 <= {GOAL}x": (first or math.inf) <= GOAL,
    }
    return {
        "bench": "composer_stream",
        "scenario": "streaming graph, c=1: gpt2 (48 new tokens) streaming into sentiment",
        "variant": (
            f"inline variant of examples/graphs/streaming.yaml with segment_delimiters "
            f"{DELIMITERS!r} (word segments): the tiny random GPT-2 rarely emits sentence "
            "punctuation, so the default '.!?\\n' gives one segment"
        ),
        "streamed": {
            "name": "RunStream: request -> first NodeChunk of 'sentiment'",
            **without_sample(streamed),
            "segments": streamed["sample"].get("sentiment_chunks"),
        },
        "baseline": {
            "name": "same graph, stream unset: request -> NodeFinished of 'sentiment'",
            **without_sample(plain),
        },
        "first_result_ratio_p50": first,
        "first_result_ratio_p99": ratio(streamed["p99_ms"], plain["p99_ms"]),
        "graph": graph_file,
        "goal": f"time to first downstream result <= {GOAL}x the non-streamed graph's",
        "checks": checks,
        "pass": all(checks.values()),
    }


def as_is_record(deployed: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    return {
        "bench": "composer_stream",
        "scenario": "streaming graph as deployed (default delimiters '.!?\\n'), c=1",
        "streamed": {
            "name": "RunStream of examples/graphs/streaming.yaml: first NodeChunk of 'sentiment'",
            **without_sample(deployed),
            "segments": deployed["sample"].get("sentiment_chunks"),
        },
        "baseline": {"name": "stream unset (as in the line above)", **without_sample(plain)},
        "first_result_ratio_p50": ratio(deployed["p50_ms"], plain["p50_ms"]),
        "goal": "informational: with one segment, streaming cannot answer earlier",
        "checks": {"no errors": clean(deployed)},
        "pass": clean(deployed),
    }
