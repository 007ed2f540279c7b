"""composer_tls: what TLS on every hop costs the seed inference graph, at c=1 and c=16.

Two stacks of the same stack file run side by side, alike but for `modelyard up --tls`
(`modelyard_cli.stack_tls`): `tls` has TLS on every hop (the client to the composer, the
composer to the workers and the control plane, the control plane's probes and load feeds
to the workers, every service to etcd with client certificates) and `plaintext` has none.
The load generator dials the TLS stack's composer trusting the stack's CA, over one
channel, so the handshake is paid once and what is measured is the encryption of every
message. Rounds alternate the two stacks (A B, B A), so drift in the machine's load hits
both alike. The admin token the TLS stack also requires is not on this path: Run is a
serving RPC.

Goal: at c=16 the TLS stack keeps at least 90% of the plaintext stack's throughput, with
0 failed requests on both; c=1 is informational (what TLS adds to a run's latency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common.load.driver import Level
from bench.common.stats import alternate, clean, ratio
from bench.composer.graph import GRAPH, LEVELS, modelyard_spec
from bench.composer.run import Run, without_sample
from bench.composer.stacks import StackProcs, modelyard_stacks

MAX_LOSS = 0.10  # of the plaintext stack's throughput, at c=16
GOAL_CONCURRENCY = 16
PLAINTEXT, TLS = "plaintext", "tls"


def tls(run: Run, stack_file: Path) -> None:
    """The two stacks of `stack_file` (its graphs include the seed inference graph), then
    a line per level."""
    # TLS vs plaintext, not admission: --smoke's stand-ins serve one call at a time, and a
    # limit sized from them would refuse most of c=16 (the seed graph's is over 100)
    fixed = {"MODELYARD_COMPOSER_MAX_RUNS_IN_FLIGHT": "64"}
    envs: dict[str, dict[str, str]] = {PLAINTEXT: dict(fixed), TLS: dict(fixed)}
    with modelyard_stacks(stack_file, run.workdir / "tls", envs, tls={TLS}) as procs:
        for level in map(run.level, LEVELS):
            measures = {name: run.measurer(load_spec(level, p)) for name, p in procs.items()}
            run.recorder.emit(record(level, alternate(measures, run.rounds)))


def load_spec(level: Level, procs: StackProcs) -> dict[str, Any]:
    """The seed graph's Run load against `procs`' composer, over TLS when it serves TLS."""
    spec = modelyard_spec(level, procs)
    security = procs.stack.security
    if security is not None:
        spec["ca_file"] = str(security.ca_file)
    return spec


def record(level: Level, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    plain, secure = results[PLAINTEXT], results[TLS]
    kept = ratio(secure["throughput_rps"], plain["throughput_rps"])
    loss = round(1.0 - kept, 4) if kept is not None else None
    checks = {f"{name}: 0 failed requests": clean(r) for name, r in results.items()}
    if level.concurrency == GOAL_CONCURRENCY:
        goal = f"TLS costs <= {MAX_LOSS:.0%} of plaintext's throughput at c={level.concurrency}"
        checks[f"throughput loss <= {MAX_LOSS:.0%}"] = loss is not None and loss <= MAX_LOSS
    else:
        goal = "informational: what TLS adds to a run's latency (pass = 0 failed requests)"
    return {
        "bench": "composer_tls",
        "scenario": f"seed inference graph, c={level.concurrency}: TLS on every hop vs plaintext",
        "concurrency": level.concurrency,
        "requests_per_round": level.requests,
        TLS: {"name": f"Composer.Run of {GRAPH}, `modelyard up --tls`", **without_sample(secure)},
        "baseline": {
            "name": f"Composer.Run of {GRAPH}, the same stack in plaintext",
            "variant": PLAINTEXT,
            **without_sample(plain),
        },
        "throughput_ratio": kept,
        "throughput_loss": loss,
        "p50_added_ms": round(secure["p50_ms"] - plain["p50_ms"], 3),
        "p99_ratio": ratio(secure["p99_ms"], plain["p99_ms"]),
        "server_cpu_ratio": ratio(secure["server_cpu_ms_per_req"], plain["server_cpu_ms_per_req"]),
        "goal": goal,
        "checks": checks,
        "pass": all(checks.values()),
    }
