"""The benchmarks' smoke runs start in the background as soon as the tests that read them
are collected, one at a time, in the order the tests will read them; each test waits for
its own run (and starts it at once if the queue has not reached it yet).

One at a time, because on two shared cores a run takes one core or so, and the suite's
own tests (one pytest process) the other: the runs overlap the unit and integration tests
that run first (tests/conftest.py orders the layers) and are done before the bench tests
read them. Started all at once, they slowed every real-process test near them to a crawl
(workers missing their start-up deadlines)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.bench.smoke import Finished, SmokeRun

# name -> the command (module and arguments) of a benchmark entry point's smoke run
COMMANDS: dict[str, tuple[str, ...]] = {
    # streaming on its own: its six loads at two levels would double the worker's smoke
    "worker": ("bench.worker", "--smoke", "--only", "overhead,predict_many,batching,rss,memory"),
    "worker_streaming": ("bench.worker", "--smoke", "--only", "streaming"),
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
    wanted = [marker.args[0] for item in session.items for marker in item.iter_markers("smoke_run")]
    queue = [_RUNS.setdefault(name, SmokeRun(*COMMANDS[name])) for name in dict.fromkeys(wanted)]
    threading.Thread(target=_run_one_at_a_time, args=(queue,), daemon=True).start()


def _run_one_at_a_time(queue: list[SmokeRun]) -> None:
    for run in queue:
        run.wait()  # starts it unless a test already did (or the session cancelled it)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for run in _RUNS.values():
        run.kill()  # a run no test waited for (an interrupted session); a queued one never starts
        run.remove_files()


@pytest.fixture(scope="session")
def smoke_result() -> Callable[[str], Finished]:
    """The finished smoke run of a bench (queued at collection; see the module doc)."""
    finished: dict[str, Finished] = {}

    def result(name: str) -> Finished:
        if name not in finished:
            finished[name] = _RUNS.setdefault(name, SmokeRun(*COMMANDS[name])).result()
        return finished[name]

    return result
