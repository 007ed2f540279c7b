"""What `modelyard up` prints: plain progress lines off a terminal, live lines that keep
to the terminal's width, and a ready panel whose addresses never wrap at 80 columns."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from modelyard_cli.stack import Phase
from modelyard_cli.stack_view import LiveProgress, PlainProgress, ready_panel
from modelyard_cli.state import StackState


def a_console(width: int = 80) -> Console:
    """What CI, a pipe or a log file gets: no terminal."""
    return Console(file=io.StringIO(), width=width, force_terminal=False)


def printed(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


class Ticks:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_each_change_is_one_plain_line_with_its_duration() -> None:
    console, clock = a_console(width=40), Ticks()
    view = PlainProgress(console, clock=clock)
    view.changed("etcd", Phase.WAITING, "")
    view.changed("worker generators", Phase.STARTING, "loading gpt2")
    clock.now += 2.5
    view.changed("worker generators", Phase.STARTING, "registering (serving at 127.0.0.1:41003)")
    clock.now += 0.5
    view.changed("worker generators", Phase.READY, "serving at 127.0.0.1:41003")
    view.changed("composer", Phase.FAILED, "composer exited with code 2 while starting")
    view.changed("composer", Phase.STOPPED, "had exited (exit code 2)")
    view.changed("etcd", Phase.STOPPING, "")
    clock.now += 0.25
    view.changed("etcd", Phase.STOPPED, "stopped")
    assert printed(console).splitlines() == [
        "worker generators: loading gpt2",
        "worker generators: registering (serving at 127.0.0.1:41003)",  # not wrapped at 40
        "worker generators: serving at 127.0.0.1:41003 (3.0 s)",
        "composer: failed: composer exited with code 2 while starting",
        "composer: had exited (exit code 2)",
        "etcd: stopping",
        "etcd: stopped (0.2 s)",
    ]


def test_live_lines_cut_a_long_detail_rather_than_squeeze_the_names() -> None:
    console = a_console(width=60)
    view = LiveProgress()
    view.changed("etcd", Phase.READY, "serving at 127.0.0.1:2379")
    view.changed("worker classifiers", Phase.STARTING, "loading " + ", ".join(["model"] * 20))
    view.changed("graphs", Phase.WAITING, "")
    console.print(view)
    lines = printed(console).splitlines()
    assert len(lines) == 3
    assert all(len(line) <= 60 for line in lines)
    assert "✓ etcd" in lines[0] and "serving at 127.0.0.1:2379" in lines[0]
    assert "worker classifiers loading model, model" in lines[1] and "…" in lines[1]
    assert lines[2].split() == ["·", "graphs", "waiting"]


def a_ready_stack() -> StackState:
    workers = {
        "generators": "127.0.0.1:41003",
        "generators-2": "127.0.0.1:41004",
        "classifiers": "127.0.0.1:41005",
    }
    return StackState(
        pid=4242,
        started_at="2026-12-01T09:00:00+00:00",
        stack_file="/repo/examples/stack.yaml",
        ready=True,
        etcd="127.0.0.1:40001",
        control_plane="127.0.0.1:41002",
        composer="127.0.0.1:41001",
        workers=workers,
        metrics={
            "etcd": "http://127.0.0.1:40001/metrics",
            **{f"worker {w}": f"http://127.0.0.1:5{i}000/metrics" for i, w in enumerate(workers)},
        },
        graphs=["inference-graph", "multi-model", "sequential", "ensemble", "streaming"],
    )


def test_the_ready_panel_keeps_every_address_whole_at_80_columns() -> None:
    console = a_console(width=80)
    state = a_ready_stack()
    console.print(ready_panel(state, Path(".cache/stack"), title="stack ready", detached=False))
    lines = printed(console).splitlines()
    assert all(len(line) <= 80 for line in lines)
    services = [
        ("etcd", state.etcd),
        ("control plane", state.control_plane),
        *((f"worker {w}", address) for w, address in state.workers.items()),
        ("composer", state.composer),
    ]
    for service, address in services:  # one row each: name, address, metrics URL, whole
        rows = [line for line in lines if f" {service} " in line and address in line]
        assert len(rows) == 1, (service, lines)
        assert state.metrics.get(service, "") in rows[0]
    text = "\n".join(lines)
    assert "--fresh" in text and "Ctrl-C" in text
    assert "inference-graph, multi-model, sequential, ensemble, streaming" in text


def test_a_detached_stack_says_how_to_stop_it_and_where_to_find_it() -> None:
    console = a_console(width=80)
    panel = ready_panel(a_ready_stack(), Path("/tmp/my-stack"), title="ready", detached=True)
    console.print(panel)
    text = printed(console)
    assert "modelyard down" in text and "Ctrl-C" not in text
    assert "export MODELYARD_STACK_DIR=/tmp/my-stack" in text
