"""The benchmarks' smoke runs start together as soon as the tests that read them are
collected, and each test waits for its own: on two shared cores the runs' process start-ups
and waits overlap, so together they take about as long as the longest of them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bench.smoke import Finished, SmokeRun

# name -> the command (module and arguments) of a benchmark entry point's smoke run
COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": ("bench.worker", "--smoke"),
    "controlplane": ("bench.controlplane", "--smoke"),
    # tracing on its own: its three stacks are the longest part of the composer's smoke
    "composer": ("bench.composer", "--smoke", "--only", "hop,graph,stream"),
    "composer_tracing": ("bench.composer", "--smoke", "--only", "tracing"),
    "composer_soak": ("bench.composer", "--smoke", "--only", "soak"),
    "composer_tls": ("bench.composer", "--smoke", "--only", "tls"),
    "gateway": ("bench.gateway", "--smoke"),
    "http_api": ("bench.http_api", "--smoke"),
    "profile_worker": ("bench.experiments.profile_worker", "whatif", "--target", "echo", "--smoke"),
}
_RUNS: dict[str, SmokeRun] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke_run(name): the test reads that bench's smoke run")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    wanted = {marker.args[0] for item in session.items for marker in item.iter_markers("smoke_run")}
    for name in sorted(wanted - set(_RUNS)):
        module, *args = COMMANDS[name]
        _RUNS[name] = SmokeRun(module, *args)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for run in _RUNS.values():
        run.kill()  # a run no test waited for (an interrupted session)
        run.remove_files()


@pytest.fixture(scope="session")
def smoke_result() -> Callable[[str], Finished]:
    """The finished smoke run of a bench (started at collection; see the module doc)."""
    finished: dict[str, Finished] = {}

    def result(name: str) -> Finished:
        if name not in finished:
            run = _RUNS.get(name) or _RUNS.setdefault(name, SmokeRun(*COMMANDS[name]))
            finished[name] = run.result()
        return finished[name]

    return result
