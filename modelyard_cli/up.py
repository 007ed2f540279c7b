"""`modelyard up` and `modelyard down`: the local stack's lifecycle.

    modelyard up [examples/stack.yaml] [--run inference-graph -i prompt="..."] [--once]
    modelyard up --detach            # in the background; returns once the stack is ready
    modelyard up --fresh             # from empty etcd data (graphs persist otherwise)
    modelyard up --tls               # TLS on every hop with a throwaway CA, an admin token
    modelyard down                   # stops the stack running from the work folder

The work folder (--work-dir, default MODELYARD_STACK_DIR else .cache/stack) holds etcd's
data, the services' logs and `stack.json`, through which every other command finds the
running stack (see modelyard_cli.state).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelyard_cli.graph import Inputs
from modelyard_cli.options import STACK_PANEL, Verbose
from modelyard_cli.state import STACK_DIR_ENV, running_stack
from modelyard_server.settings_file import FileProblem

console = Console()
errors = Console(stderr=True)

WorkDir = Annotated[
    Path,
    typer.Option(
        envvar=STACK_DIR_ENV,
        help="The stack's work folder: etcd data, logs, stack.json.",
    ),
]
DEFAULT_WORK_DIR = Path(".cache/stack")


def up(
    stack: Annotated[Path, typer.Argument(help="Stack file.")] = Path("examples/stack.yaml"),
    run_graph: Annotated[str | None, typer.Option("--run", help="Run this graph once up.")] = None,
    input: Inputs = None,
    once: Annotated[bool, typer.Option(help="Stop the stack after --run.")] = False,
    detach: Annotated[
        bool, typer.Option(help="Run in the background; return once ready (stop: `down`).")
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Start from empty etcd data (no graphs from earlier runs).")
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            help="TLS on every hop with a throwaway CA, and an admin token (both in "
            "<work-dir>/tls; the other commands use them by themselves)."
        ),
    ] = False,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    background: Annotated[bool, typer.Option(hidden=True)] = False,
    verbose: Verbose = False,
) -> None:
    """Start the local stack: etcd, control plane, workers, composer; deploy its graphs.

    Example:

        modelyard up examples/stack.yaml --run inference-graph -i prompt="I have an idea!"
    """
    from modelyard_cli import supervisor
    from modelyard_cli.main import _pairs, setup_logging
    from modelyard_cli.stack import Stack

    if detach and once:
        errors.print("--once stops the stack it started; --detach keeps it running: pick one")
        raise typer.Exit(2)
    try:
        Stack(stack).spec()  # a stack file that cannot work fails here, before any start
    except (FileProblem, ValueError) as error:
        errors.print(f"[red]cannot use {stack}:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    setup_logging(verbose)
    inputs = _pairs(input or [])
    request = supervisor.UpRequest(stack, work_dir, fresh, run_graph, inputs, once, background, tls)
    # --run's own calls find this stack (and, under --tls, its credentials) as another
    # command run with this work folder would
    os.environ[STACK_DIR_ENV] = str(work_dir)
    if not detach:
        raise typer.Exit(supervisor.supervise(request, console, errors))

    from modelyard_cli.background import start_detached

    code = start_detached(request, console, errors)
    state = running_stack(work_dir)
    if code == 0 and run_graph and state is not None:
        code = supervisor.run_graph(state.composer, run_graph, inputs, console)
    raise typer.Exit(code)


def down(
    work_dir: WorkDir = DEFAULT_WORK_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to stop.")] = 90.0,
    verbose: Verbose = False,
) -> None:
    """Stop the local stack running from the work folder (SIGTERM to its supervisor).

    Example:

        modelyard down
    """
    from modelyard_cli.background import echo_lines
    from modelyard_cli.state import pid_alive

    state = running_stack(work_dir)
    if state is None:
        errors.print(f"no stack is running from {work_dir}; `modelyard up --detach` starts one")
        raise typer.Exit(2)
    console.print(f"stopping the stack ({state.describe()})", highlight=False)
    with contextlib.ExitStack() as resources:
        log = resources.enter_context(Path(state.log_file).open("rb")) if state.log_file else None
        if log is not None:
            log.seek(0, os.SEEK_END)  # the stopping lines only
        with contextlib.suppress(ProcessLookupError):  # it may have stopped by itself
            os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.pid):
            if log is not None:
                echo_lines(log, console)
            if time.monotonic() > deadline:
                errors.print(f"the stack (pid {state.pid}) is still running after {timeout:g} s")
                raise typer.Exit(1)
            time.sleep(0.1)
        if log is None:
            console.print("stack stopped")
        else:
            echo_lines(log, console)  # ends with the supervisor's own "stack stopped"


def register(app: typer.Typer) -> None:
    for command in (up, down):
        app.command(rich_help_panel=STACK_PANEL)(command)
