"""What a model's `source` is read as, and what a hub id costs when the hub is out of reach.

The hub here is a loopback port: nobody listening (refused at once, on any machine), or a
stand-in server that answers every request with one status."""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from modelyard.errors import InvalidArgument, Unavailable
from workers.hf.hub import hub_access
from workers.loader import check_source, create_model
from workers.settings import ModelConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "source",
    [
        "/srv/models/missing",
        "./missing",
        "../missing",
        "~",  # left unexpanded only without a home folder
        "models/bert/base",  # two "/": a hub id has at most one
        "C:\\models\\bert",
        "my model",  # a space: no hub id has one
        "org/model.git",
        "x--y",
    ],
)
def test_a_source_that_can_only_be_a_folder_and_is_none_says_no_such_folder(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: no relative source exists here
    with pytest.raises(InvalidArgument, match=r"^no such folder: ") as caught:
        check_source(source)
    assert source in caught.value.message
    assert "Repo id" not in caught.value.message


def test_a_relative_missing_folder_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgument) as caught:
        check_source("models/bert/base")
    assert caught.value.message == f"no such folder: models/bert/base (relative to {tmp_path})"


@pytest.mark.parametrize("source", ["gpt2", "org/model", "my_org/bert-base.v2"])
def test_anything_that_may_be_a_hub_id_passes(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    check_source(source)


def test_an_existing_folder_passes_and_a_file_is_not_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_source(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    check_source(".")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(InvalidArgument, match=r"^not a folder: .*holds config\.json"):
        check_source(str(weights))


def test_the_loader_checks_a_source_before_building_a_pipeline(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(InvalidArgument, match=f"^no such folder: {re.escape(str(missing))}$"):
        create_model(ModelConfig(name="m", source=str(missing)))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (the library read its path once, at import)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return cache


def use_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """HF_ENDPOINT, as huggingface_hub read it at import."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub on a loopback port that refuses connections."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{holder.getsockname()[1]}"
        use_endpoint(monkeypatch, endpoint)
        yield endpoint


@pytest.fixture
def answering_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A hub that answers every request with the status the test puts in the list."""
    status = [404]

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    use_endpoint(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield status
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def cache_model(cache: Path, repo_id: str) -> None:
    """`repo_id` at "main" in the cache, laid out as hf_hub_download leaves it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "config.json").write_text("{}")


def test_an_unreachable_hub_and_no_cached_copy_fail_at_once_saying_what_to_do(
    hub_cache: Path, unreachable_hub: str
) -> None:
    with pytest.raises(Unavailable) as caught:
        hub_access("someone/some-model", None)
    message = caught.value.message
    assert message.startswith(f"the Hugging Face hub is unreachable ({unreachable_hub}: ")
    assert "'someone/some-model' is neither a folder here nor in the local cache" in message
    assert str(hub_cache) in message
    assert message.endswith("use a local folder as its source, or pre-fill the cache where "
                            "the hub is reachable and set HF_HUB_OFFLINE=1")  # fmt: skip


def test_an_unreachable_hub_with_a_cached_copy_loads_from_the_cache_only(
    hub_cache: Path, unreachable_hub: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache_model(hub_cache, "someone/cached")
    with caplog.at_level(logging.WARNING, logger="workers.hf.hub"):
        assert hub_access("someone/cached", "main") == {"local_files_only": True}
    assert "loading 'someone/cached' from the local cache" in caplog.text
    with pytest.raises(Unavailable):  # another revision is not cached
        hub_access("someone/cached", "v2")


def test_offline_mode_asks_nothing_and_names_what_is_missing(
    hub_cache: Path, unreachable_hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache_model(hub_cache, "someone/cached")
    assert hub_access("someone/cached", None) == {}  # transformers reads the cache itself
    with pytest.raises(InvalidArgument) as caught:
        hub_access("someone/some-model", None)
    assert "HF_HUB_OFFLINE is set" in caught.value.message
    assert "`hf download someone/some-model`" in caught.value.message


def test_a_hub_that_answers_lets_transformers_load_and_say_what_is_wrong(
    hub_cache: Path, answering_hub: list[int]
) -> None:
    answering_hub[0] = 404  # no such model: transformers says so, no retries for a 404
    assert hub_access("someone/some-model", None) == {}


def test_a_hub_that_answers_it_is_busy_counts_as_unreachable(
    hub_cache: Path, answering_hub: list[int]
) -> None:
    answering_hub[0] = 503  # huggingface_hub would retry this for about 23 s
    with pytest.raises(Unavailable, match=r"unreachable \(.*: it answered HTTP 503\)"):
        hub_access("someone/some-model", None)
