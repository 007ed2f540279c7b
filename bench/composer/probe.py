"""composer_graph_probe: the seed graph's two generators called directly, each alone and
both at once, to show why c=1 is not faster than BentoML.

Models that share a worker process share its GIL: the tiny models' generate loops are
Python-bound, so two generations on one worker take turns (finding 1 of bench/README.md's
composer section; examples/stack.yaml has since put each generator on its own worker).
`serialisation` says how much: 1.0, both at once take as long as one after the other;
0.0, fully in parallel.
"""

from __future__ import annotations

from typing import Any

from bench.common.load.driver import Level
from bench.common.stats import clean, rounds_summary
from bench.composer.run import PROMPT, Run
from bench.composer.stacks import StackProcs

LEVEL = Level(1, 20, 3, 15.0)
GENERATORS = ("gpt2", "distilgpt2")


def placement_probe(run: Run, procs: StackProcs) -> dict[str, Any]:
    hops = {model: [procs.address_of(model), model] for model in GENERATORS}
    common = {
        "inputs": [{"text": PROMPT}],
        "parameters": {"max_new_tokens": 16, "do_sample": False},
        "server_pids": sorted({procs.pid_of(address) for address, _ in hops.values()}),
    }
    level = run.level(LEVEL)
    calls = {
        "gpt2 alone": ("chain", [hops["gpt2"]]),
        "distilgpt2 alone": ("chain", [hops["distilgpt2"]]),
        "both at once": ("fanout", list(hops.values())),
    }
    results = {
        name: rounds_summary([run.measure(level.spec(kind=kind, hops=chosen, **common))])
        for name, (kind, chosen) in calls.items()
    }
    alone = [results["gpt2 alone"]["p50_ms"], results["distilgpt2 alone"]["p50_ms"]]
    both = results["both at once"]["p50_ms"]
    shared = hops["gpt2"][0] == hops["distilgpt2"][0]
    return {
        "bench": "composer_graph_probe",
        "scenario": "the generators called directly "
        f"({'one worker' if shared else 'one worker each'}), 16 new tokens, c=1",
        "workers": {model: hop[0] for model, hop in hops.items()},
        "p50_ms": {name: r["p50_ms"] for name, r in results.items()},
        "server_cpu_ms_per_req": {name: r["server_cpu_ms_per_req"] for name, r in results.items()},
        "other_cpu_pct": {name: r["other_cpu_pct"] for name, r in results.items()},
        "serialisation": round((both - max(alone)) / min(alone), 3) if min(alone) else None,
        "baseline": "each generator alone: both at once take as long as the longer of the two "
        "when they run in parallel, as long as both together when they take turns",
        "goal": "informational (pass = no errors)",
        "checks": {"no errors": all(clean(r) for r in results.values())},
        "pass": all(clean(r) for r in results.values()),
    }
