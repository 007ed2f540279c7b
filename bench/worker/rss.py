"""peak_rss: one worker serving three tiny models vs the same worker serving only Echo.

RSS of the worker and its children is sampled every 20 ms from spawn to stop (peak, at
ready, at the end), through model loading and a short load on each model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from bench.common.load.driver import Level, run_load
from bench.common.memory import MB, RssSampler
from bench.common.servers import serving, worker, write_worker_config
from bench.common.stats import clean
from bench.worker.models import (
    BATCH_ON,
    ECHO_INPUTS,
    ECHO_MODEL,
    GPT2_INPUTS,
    NLI_INPUTS,
    SENTIMENT_INPUTS,
    Checkpoints,
    checkpoint_model,
    sentiment_model,
)
from bench.worker.run import Run, load_spec

LEVEL = Level(4, 200, 20, time_cap_s=15.0)
# model -> (inputs, requests): a short load on each, as a client mix would.
LOADS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "sentiment": (SENTIMENT_INPUTS, 200),
    "nli": (NLI_INPUTS, 100),
    "gpt2": (GPT2_INPUTS, 60),
    "echo": (ECHO_INPUTS, 200),
}


def three_models(checkpoints: Checkpoints) -> list[dict[str, Any]]:
    return [
        sentiment_model("sentiment", checkpoints, BATCH_ON),
        checkpoint_model("nli", checkpoints, "tiny-bert-nli", "zero-shot-classification"),
        checkpoint_model(
            "gpt2", checkpoints, "tiny-gpt2", "text-generation", parameters={"max_new_tokens": 8}
        ),
    ]


def rss_of(run: Run, name: str, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Starts a worker and samples its RSS from spawn through a short load on every model."""
    config = write_worker_config(run.workdir / f"{name}.yaml", models)
    loads: dict[str, Any] = {}
    with RssSampler(descendants=True, interval_s=0.02) as sampler:
        attach = functools.partial(sampler.attach, "worker")
        with serving(name, worker(config), run.workdir, on_spawn=attach) as served:
            ready_bytes = sampler.sample()
            for model in models:
                inputs, requests = LOADS[model["name"]]
                level = run.level(dataclasses.replace(LEVEL, requests=requests))
                loads[model["name"]] = run_load(load_spec(served, model["name"], inputs, level))
            end_bytes = sampler.sample()
    return {
        "models": [m["name"] for m in models],
        "rss_ready_mb": round(ready_bytes / MB, 1),
        "rss_after_load_mb": round(end_bytes / MB, 1),
        "rss_peak_mb": round(sampler.peak_total / MB, 1),
        "rss_peak_main_process_mb": round(sampler.peak.get("worker", 0) / MB, 1),
        "samples": sampler.samples,
        "load": {
            m: {k: r[k] for k in ("ok", "errors", "capped", "p50_ms", "throughput_rps")}
            for m, r in loads.items()
        },
        "errors": sum(r["errors"] for r in loads.values()),
        "capped": any(r["capped"] for r in loads.values()),
    }


def peak_rss(run: Run, checkpoints: Checkpoints) -> None:
    baseline = rss_of(run, "rss-echo-worker", ECHO_MODEL)
    measured = rss_of(run, "rss-three-models", three_models(checkpoints))
    checks = {"every model served its load": clean(measured) and clean(baseline)}
    run.recorder.emit(
        {
            "bench": "peak_rss",
            "scenario": "one worker: sentiment + nli zero-shot + tiny-gpt2 text-generation",
            "worker": measured,
            "baseline": {
                "name": "the same worker serving only Echo (framework + torch)",
                **baseline,
            },
            "models_delta_peak_mb": round(measured["rss_peak_mb"] - baseline["rss_peak_mb"], 1),
            "goal": "no RSS target set; informational (pass = every model served its load)",
            "checks": checks,
            "pass": all(checks.values()),
        }
    )
