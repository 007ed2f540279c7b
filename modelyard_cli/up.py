"""`modelyard up`: bring the whole local stack up from a stack file.

modelyard up [examples/stack.yaml] [--run inference-graph -i prompt="..."] [--once]
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelyard_cli.graph import Inputs

console = Console()


def up(
    stack: Annotated[Path, typer.Argument(help="Stack file.")] = Path("examples/stack.yaml"),
    run_graph: Annotated[str | None, typer.Option("--run", help="Run this graph once up.")] = None,
    input: Inputs = None,
    once: Annotated[bool, typer.Option(help="Stop the stack after --run.")] = False,
    work_dir: Annotated[Path, typer.Option(help="etcd data, generated worker configs.")] = Path(
        ".cache/stack"
    ),
) -> None:
    """Start the local stack: etcd, control plane, workers, composer; deploy its graphs."""
    from modelyard_cli.graph_output import deploy_files, print_run
    from modelyard_cli.main import _pairs, setup_logging
    from modelyard_cli.stack import Stack

    setup_logging(False)
    console.rule("[bold]modelyard up")
    running = Stack(stack, work_dir=work_dir)
    code = 0
    try:
        running.start()
        console.print(f"control plane {running.control_plane}   composer {running.composer}")
        for worker_id, address in running.workers.items():
            console.print(f"worker {worker_id} {address}")
        deploy_files(running.composer, running.graph_files(), console)
        if run_graph:
            code = print_run(running.composer, run_graph, _pairs(input or []), console)
        if not once:
            console.print(
                f"stack is up: export MODELYARD_COMPOSER_ADDRESS={running.composer} "
                f"MODELYARD_CONTROLPLANE_ADDRESS={running.control_plane}; Ctrl-C stops it"
            )
            # blocked first, so sigwait receives them instead of the default handlers;
            # the children started earlier keep their own handlers
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            signal.sigwait(stop_signals)
    finally:
        running.stop()
        console.print("stack stopped")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(up)
