"""The `modelyard up` supervisor: starts the stack, deploys its graphs, publishes the state
file, waits for Ctrl-C or SIGTERM (`modelyard down`), and stops every service in order.

    claim the work folder ─▶ start (live lines) ─▶ deploy graphs ─▶ state file ready ─▶ panel
      ─▶ [--run GRAPH] ─▶ wait for a signal (unless --once) ─▶ stop, service by service
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from modelyard_cli.stack import Phase, Stack, StackError, StackObserver
from modelyard_cli.stack_view import PlainProgress, progress, ready_panel
from modelyard_cli.state import StackRunning, StackState, StateFile

GRAPHS = "graphs"


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: stop the stack."""


@dataclass(frozen=True)
class UpRequest:
    stack_file: Path
    work_dir: Path
    fresh: bool = False
    run_graph: str | None = None
    inputs: Mapping[str, Any] | None = None
    once: bool = False
    background: bool = False  # detached: no panel (the starting command prints it)
    tls: bool = False  # a throwaway CA, TLS on every hop, an admin token


def supervise(request: UpRequest, console: Console, errors: Console) -> int:
    """Runs the stack of `request` until it is stopped; the command's exit code."""
    state_file = StateFile(request.work_dir)
    try:
        stale = state_file.claim()
    except StackRunning as running:
        errors.print(refusal(running), markup=False, highlight=False)
        return 2
    if not request.background:
        console.rule("[bold]modelyard up")
    if stale is not None:
        console.print(f"removed the state file of a stack that is gone ({stale.describe()})")
    began = time.monotonic()
    state = StackState(
        pid=os.getpid(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        stack_file=str(request.stack_file.resolve()),
        log_file=str((request.work_dir / "up.log").resolve()) if request.background else "",
    )
    state_file.write(state)
    stack = Stack(
        request.stack_file, work_dir=request.work_dir, fresh=request.fresh, tls=request.tls
    )
    code = 0
    with stop_signals() as stopping:
        try:
            with progress(console) as view:
                stack.observer = view
                for service in (*stack.services(), GRAPHS):
                    view.changed(service, Phase.WAITING, "")
                stack.start()
                graphs = deploy_graphs(stack, view, console)
            state = replace(
                state,
                ready=True,
                etcd=stack.etcd.endpoint if stack.etcd else "",
                control_plane=stack.control_plane,
                composer=stack.composer,
                gateway=stack.gateway,
                workers=dict(stack.workers),
                metrics=dict(stack.metrics),
                graphs=graphs,
            )
            state = with_tls(state, stack)
            state_file.write(state)
            if not request.background:
                title = f"stack ready in {time.monotonic() - began:.1f} s"
                console.print(ready_panel(state, request.work_dir, title=title, detached=False))
            if request.run_graph:
                code = run_graph(stack.composer, request.run_graph, request.inputs or {}, console)
            if not request.once:
                watch(stack, console)
        except StackError as error:
            errors.print(f"the stack did not start: {error}", markup=False, soft_wrap=True)
            code = 1
        except StopRequested as signalled:
            console.print(f"{signalled}: stopping the stack")
        finally:
            stopping.now = True
            stack.observer = PlainProgress(console)
            stack.stop()
            state_file.release()
            console.print("stack stopped")
    return code


def with_tls(state: StackState, stack: Stack) -> StackState:
    """`state` with the files other commands reach a --tls stack with."""
    security = stack.security
    if security is None:
        return state
    return replace(
        state,
        ca_file=str(security.ca_file.resolve()),
        cert_file=str(security.cli.cert_file.resolve()),
        key_file=str(security.cli.key_file.resolve()),
        token_file=str(security.token_file.resolve()),
    )


def refusal(running: StackRunning) -> str:
    return (
        f"{running}\n"
        "Use it as it is (`modelyard status`), stop it first (`modelyard down`), "
        "or start another stack with --work-dir."
    )


def deploy_graphs(stack: Stack, view: StackObserver, console: Console) -> list[str]:
    """Deploys the stack file's graphs; the names deployed. A graph the composer refuses
    stops the start-up, naming the file and the reason."""
    from composer.spec import load_graph
    from modelyard.composer_client import ComposerClient
    from modelyard.errors import ModelyardError

    names: list[str] = []
    warnings: list[str] = []
    call = stack.client()
    with ComposerClient(
        stack.composer, timeout=30, credentials=call.credentials, token=call.token
    ) as client:
        view.changed(GRAPHS, Phase.STARTING, "deploying")
        for path in stack.graph_files():
            try:
                graph = load_graph(path)
                warnings += [f"graph {graph.name}: {w}" for w in client.deploy(graph)]
            except ModelyardError as error:
                view.changed(GRAPHS, Phase.FAILED, f"{path.name}: {error.message}")
                raise StackError(f"graph file {path}: {error.message}") from None
            names.append(graph.name)
            view.changed(GRAPHS, Phase.STARTING, f"deployed graph {graph.name}")
    view.changed(GRAPHS, Phase.READY, f"deployed {', '.join(names) or 'none'}")
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    return names


def run_graph(composer: str, graph: str, inputs: Mapping[str, Any], console: Console) -> int:
    from modelyard_cli.graph_output import print_run

    return print_run(composer, graph, inputs, console)


def watch(stack: Stack, console: Console) -> None:
    """Waits for a stop signal, saying once when a service exits by itself."""
    reported: set[str] = set()
    while True:
        for service, code in stack.exited().items():
            if service not in reported:
                reported.add(service)
                console.print(
                    f"[red]{service} exited with code {code}[/red]; its log is in {stack.work_dir}",
                    highlight=False,
                )
        time.sleep(1)


class _Stopping:
    now = False  # set once stopping began: later signals only say so


@contextmanager
def stop_signals() -> Iterator[_Stopping]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal: the services, in their own process
    groups, would not hear it) raise StopRequested in the main thread, once; a second
    signal while the stack stops is acknowledged, not obeyed, so every service still stops
    in order (each is killed if it takes over 20 s)."""
    stopping = _Stopping()

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.now:
            print(f"{name}: already stopping", flush=True)
            return
        stopping.now = True
        raise StopRequested(name)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stopping
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
