"""The real worker with a cost patched out, to size that cost before fixing it.

    python -m bench.experiments.patched_worker --variants nometrics,nointerceptor \\
        worker --config W.yaml --port 0 --port-file P

An experiment harness, not a fix: each variant patches a library the worker uses (never the
worker's own code, which changes under it) to remove one cost, then runs `modelyard
worker` in this process:

  nometrics      per-request Prometheus updates become no-ops
  nointerceptor  the gRPC server gets no interceptors (the error mapping)
  eager          adds a cost instead: imports what every worker imported before issue 12
                 made those imports lazy (torch, transformers and the pipeline adapter;
                 cryptography, for the --tls stack's CA): the memory bench's baseline

`inline` (no thread hop) and `directtc` (text classification without the pipeline's
per-item work) were retired once the worker adopted them (bench/README.md, findings 1
and 3). `python -m bench.experiments.profile_worker whatif` starts one of these per
variant and compares them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bench.common.servers import run_modelyard_here


class _NoMetric:
    def inc(self, *args: Any) -> None: ...
    def dec(self, *args: Any) -> None: ...
    def set(self, *args: Any) -> None: ...
    def observe(self, *args: Any) -> None: ...
    def set_function(self, *args: Any) -> None: ...


def patch_nometrics() -> None:
    import prometheus_client.metrics

    nothing = _NoMetric()

    def labels(self: Any, *values: Any, **named: Any) -> Any:
        return nothing

    prometheus_client.metrics.MetricWrapperBase.labels = labels  # type: ignore[method-assign]


def patch_nointerceptor() -> None:
    import grpc.aio

    real_server = grpc.aio.server

    def server(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("interceptors", None)
        return real_server(*args, **kwargs)

    # the worker looks up grpc.aio.server when it builds its server, so this reaches it
    grpc.aio.server = server


def patch_eager() -> None:
    # imported for their cost alone
    import modelyard_cli.throwaway_ca  # noqa: F401
    import workers.hf.pipeline_model  # noqa: F401


PATCHES: dict[str, Callable[[], None]] = {
    "nometrics": patch_nometrics,
    "nointerceptor": patch_nointerceptor,
    "eager": patch_eager,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        usage="%(prog)s [--variants V,...] worker --config W.yaml ...",
    )
    parser.add_argument("--variants", default="", help=f"comma-separated: {', '.join(PATCHES)}")
    args, command = parser.parse_known_args()
    variants = [name for name in args.variants.split(",") if name]
    if unknown := set(variants) - set(PATCHES):
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    for name in variants:
        PATCHES[name]()
    run_modelyard_here(command)


if __name__ == "__main__":
    main()
