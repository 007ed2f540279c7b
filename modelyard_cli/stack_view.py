"""What `modelyard up` shows: a line per service while the stack starts or stops, then one
panel with every address.

On a terminal the lines are live (a spinner per service that is starting); anywhere else
(CI, a pipe, a log file) each change is one plain line, so a log reads as a timeline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from modelyard_cli.stack import (
    COMPOSER,
    CONTROL_PLANE,
    ETCD,
    GATEWAY,
    Phase,
    StackObserver,
    worker_service,
)
from modelyard_cli.stack_tls import TLS_FOLDER
from modelyard_cli.state import STACK_DIR_ENV, StackState, stack_dir

BUSY = (Phase.STARTING, Phase.STOPPING)
MARKS = {
    Phase.WAITING: "[dim]·[/dim]",
    Phase.READY: "[green]✓[/green]",
    Phase.FAILED: "[red]✗[/red]",
    Phase.STOPPED: "[dim]■[/dim]",
}


class PlainProgress:
    """One line per change: `control plane: serving at 127.0.0.1:41234 (1.2 s)`."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self._clock = clock
        self._since: dict[str, float] = {}

    def changed(self, service: str, phase: Phase, detail: str) -> None:
        if phase is Phase.WAITING:
            return  # the plan, not a change: the live view shows it
        if phase in BUSY:
            self._since.setdefault(f"{service} {phase.value}", self._clock())
        line = f"{service}: {_describe(phase, detail)}{self._took(service, phase)}"
        # no wrapping: a log line stays one line however long its path or address
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _took(self, service: str, phase: Phase) -> str:
        began = {Phase.READY: Phase.STARTING, Phase.STOPPED: Phase.STOPPING}.get(phase)
        since = self._since.get(f"{service} {began.value}") if began else None
        return f" ({self._clock() - since:.1f} s)" if since is not None else ""


def _describe(phase: Phase, detail: str) -> str:
    if phase is Phase.FAILED:
        return f"failed: {detail}"
    return detail or phase.value


@dataclass
class _Row:
    phase: Phase
    detail: str
    since: float = field(default_factory=time.monotonic)
    took: float | None = None  # how long the busy phase before this one lasted
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="cyan"))

    def seconds(self) -> str:
        if self.phase in BUSY:
            return f"{time.monotonic() - self.since:.1f} s"
        return f"{self.took:.1f} s" if self.took is not None else ""


class LiveProgress:
    """A live line per service: a spinner while it starts, a mark once it is done."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}

    def changed(self, service: str, phase: Phase, detail: str) -> None:
        row = self._rows.get(service)
        if row is not None and row.phase is phase:
            row.detail = detail
            return
        took = time.monotonic() - row.since if row is not None and row.phase in BUSY else None
        self._rows[service] = _Row(phase, detail, took=took)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        name_width = max(map(len, self._rows), default=0)
        # mark, name, detail, seconds and their gaps: the detail gets what is left, and a
        # long one ends in "…" rather than wrapping or squeezing the names
        detail_width = max(options.max_width - name_width - 11, 10)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(width=name_width, no_wrap=True, style="bold")
        grid.add_column(max_width=detail_width, no_wrap=True, overflow="ellipsis")
        grid.add_column(width=7, no_wrap=True, justify="right", style="dim")
        for service, row in self._rows.items():
            mark: RenderableType = row.spinner if row.phase in BUSY else MARKS[row.phase]
            detail = Text(_describe(row.phase, row.detail), no_wrap=True, overflow="ellipsis")
            grid.add_row(mark, service, detail, row.seconds())
        yield grid


@contextmanager
def progress(console: Console) -> Iterator[StackObserver]:
    """The observer for `console`: live on a terminal, plain lines otherwise."""
    if not console.is_terminal:
        yield PlainProgress(console)
        return
    view = LiveProgress()
    with Live(view, console=console, refresh_per_second=8):
        yield view


def ready_panel(state: StackState, work_dir: Path, *, title: str, detached: bool) -> Panel:
    """Every address of the stack, and how to use it from another shell. No address is
    ever wrapped: at 80 columns each fits on its line whole."""
    services = Table.grid(padding=(0, 2))
    services.add_column(no_wrap=True, style="bold")
    services.add_column(no_wrap=True, style="cyan")
    services.add_column(no_wrap=True)
    services.add_row("service", "address", "metrics", style="dim")
    listed = [(ETCD, state.etcd), (CONTROL_PLANE, state.control_plane)]
    listed += [(worker_service(w), address) for w, address in state.workers.items()]
    listed.append((COMPOSER, state.composer))
    if state.gateway:
        listed.append((GATEWAY, state.gateway))
    for service, address in listed:
        services.add_row(service, address, state.metrics.get(service, ""))
    default_dir = STACK_DIR_ENV not in os.environ and work_dir.resolve() == stack_dir().resolve()
    found = (
        "any shell in this folder finds the stack: no address needed"
        if default_dir
        else f"in another shell: export {STACK_DIR_ENV}={work_dir}"
    )
    notes = Table.grid(padding=(0, 2))
    notes.add_column(no_wrap=True, style="bold")
    notes.add_column()
    notes.add_row("graphs", ", ".join(state.graphs) or "(none)")
    notes.add_row("", "kept in etcd between runs; `modelyard up --fresh` starts empty")
    notes.add_row("folder", Text(f"{work_dir}: logs, etcd data, stack.json"))
    notes.add_row("use it", "modelyard graph list · modelyard workers · modelyard status")
    if state.tls:
        ca_file = work_dir / TLS_FOLDER / Path(state.ca_file).name  # as short as the folder
        notes.add_row("tls", "on: every service trusts the stack's CA; the commands use it")
        notes.add_row("", Text(f"and its admin token by themselves. CA: {ca_file}"))
        notes.add_row("", Text(f"grpcurl -cacert {ca_file} {state.composer} list"))
    if state.gateway:
        scheme = "https" if state.tls else "http"
        notes.add_row("openai", Text(f"OPENAI_BASE_URL={scheme}://{state.gateway}/v1"))
        if state.tls:
            notes.add_row("", Text(f"SSL_CERT_FILE={ca_file}"))
    notes.add_row("", Text(f"({found})"))
    notes.add_row("stop", "modelyard down" if detached else "Ctrl-C, or modelyard down")
    return Panel(Group(services, "", notes), title=title, title_align="left", expand=False)
