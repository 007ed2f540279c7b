"""Whether a hub model can be fetched before transformers tries: one quick question to the hub.

huggingface_hub retries a file it cannot fetch and has not cached 5 times, sleeping 1, 2,
4, 8 and 8 s between tries, and no setting shortens that (HF_HUB_ETAG_TIMEOUT and
HF_HUB_DOWNLOAD_TIMEOUT bound each try, not the sleeps). With the hub out of reach, a
model that is not cached failed after 25 s (its config.json alone; 51 s were reported
where a second file was asked for), and one that is cached took 214 s to load: a pipeline
also asks for optional files, and each one the cache lacks is retried in full. Measured
here with huggingface_hub 2.4 and transformers 5.23 (DNS failing at once).

So before a hub model loads, `hub_access` asks the hub once, without retries, for the
model's config.json (a HEAD request, bounded by HF_HUB_ETAG_TIMEOUT, 10 s by default):
- an answer (even "not found": transformers then says what is wrong): load as usual;
- no answer, model in the local cache: load from the cache only (`local_files_only`);
- no answer, not cached: fail at once, saying what to do instead.
With HF_HUB_OFFLINE=1 nothing is asked; a model missing from the cache fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

#: What huggingface_hub answers with when it would retry: the hub is there but not serving.
_BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def probe_source(source: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """`hub_access` for a source that is a hub id, with the config's `revision` and `token`
    options; None for a folder (nothing to ask)."""
    if Path(source).is_dir() or not is_hub_id(source):
        return None
    return hub_access(source, options.get("revision"), options.get("token"))


def hub_access(repo_id: str, revision: str | None, token: Any = None) -> dict[str, Any]:
    """The extra from_pretrained options to load `repo_id` with ({} or local files only);
    Unavailable when the hub is out of reach and the cache lacks it, InvalidArgument when
    HF_HUB_OFFLINE is set and the cache lacks it."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    if constants.is_offline_mode():
        if not cached:
            raise InvalidArgument(
                f"'{repo_id}' is neither a folder here nor in the local Hugging Face cache "
                f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set, so it is not "
                "downloaded; use a local folder as its source, or pre-fill the cache "
                f"(`hf download {repo_id}` where the hub is reachable)"
            )
        return {}
    problem = _unreachable(repo_id, revision, token)
    if problem is None:
        return {}
    if cached:
        log.warning(
            "the Hugging Face hub is unreachable (%s); loading '%s' from the local cache",
            problem,
            repo_id,
        )
        return {"local_files_only": True}
    raise Unavailable(
        f"the Hugging Face hub is unreachable ({constants.ENDPOINT}: {problem}), and "
        f"'{repo_id}' is neither a folder here nor in the local cache "
        f"({constants.HF_HUB_CACHE}); use a local folder as its source, or pre-fill the "
        "cache where the hub is reachable and set HF_HUB_OFFLINE=1"
    )


def _unreachable(repo_id: str, revision: str | None, token: Any) -> str | None:
    """Why the hub gave no usable answer about `repo_id`'s config.json, or None if it did."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo_id, "config.json", revision=revision)
    try:
        # retry_on_errors=False (its default): one request, however it fails
        get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError as error:
        status = error.response.status_code
        return f"it answered HTTP {status}" if status in _BUSY_STATUSES else None
    # No answer at all: DNS, a refused connection, TLS, a proxy, a timeout. The transport's
    # errors are httpx2's, which this package does not import; the message says which.
    except Exception as error:
        return str(error) or type(error).__name__
    return None


def is_hub_id(source: str) -> bool:
    """Whether `source` names a hub model rather than a folder: not written as a path
    (`/`, `./`, `../`, `~`, two or more `/`, a backslash) and a valid repo id."""
    return not _written_as_path(source) and _plausible_hub_id(source)


def _written_as_path(source: str) -> bool:
    # "~" is left only when there is no home folder to expand it to (`resolve_source`)
    return (
        source in (".", "..")
        or source.startswith(("/", "./", "../", "~"))
        or source.count("/") >= 2
        or "\\" in source  # a Windows path; never part of a hub id
    )


def _plausible_hub_id(source: str) -> bool:
    # Imported here: only transformers-backed models get this far, and they load it anyway.
    # validate_repo_id is documented under huggingface_hub.utils, which has no __all__.
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True
