"""Turns a model's config into a `Model` object, and gives it a version.

How a `source` is read (`check_source`), in this order:

1. An existing folder is a local checkpoint.
2. A source written as a path is a folder, and a missing one fails at once with
   "no such folder: <path>": it starts with "/", "./", "../" or "~" (or is "." or ".."),
   or it has two or more "/", or a backslash (a hub id has at most one "/").
3. Otherwise a Hugging Face hub id ("name" or "namespace/name": letters, digits, "-", "_",
   "." - huggingface_hub's own rule) is fetched from the hub or its local cache (see
   `workers.hf.hub`). A relative "org/model" that is not a folder here is read as an id.
4. Anything else (a space, other characters) can only have been meant as a folder: "no such
   folder: <path>", not Hugging Face's "Repo id must be in the form ...".

A load failure raised as `InvalidArgument` (a missing folder, an unimportable class, a
bad task or option) is the config's mistake; anything else is the environment's or the
model's (see `workers.registry`).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidArgument
from modelyard.function_model import FunctionModel
from modelyard.model import Model
from workers.hf.hub import is_hub_id, probe_source
from workers.settings import ModelConfig


def create_model(config: ModelConfig) -> Model:
    """A custom model from its class path, or a transformers pipeline for a source."""
    if config.class_path:
        target = import_target(config.class_path)
        model = target() if isinstance(target, type) else FunctionModel(target)
        if config.task:
            model.task = config.task
        return model
    check_source(config.source)
    # The hub is asked before torch and transformers are imported (seconds, more on a busy
    # host), so a worker whose hub is out of reach says so at once.
    hub = probe_source(config.source, config.options)
    from workers.hf.pipeline_model import PipelineModel

    return PipelineModel(task=config.task, hub=hub)


def check_source(source: str) -> None:
    """Refuses a source that can only be a folder and is none (the rule is in the module's
    docstring); a folder, or anything that may be a hub id, passes."""
    path = Path(source)
    if path.is_dir():
        return
    if path.exists():
        raise InvalidArgument(
            f"not a folder: {source} (a model source is the folder that holds config.json)"
        )
    if not is_hub_id(source):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise InvalidArgument(f"no such folder: {source}{where}")


def import_target(path: str) -> type[Model] | Callable[..., Any]:
    """A Model subclass, or a plain function to wrap, from `package.module:Name`."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise InvalidArgument(f"class path {path!r} must look like 'package.module:ClassName'")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise InvalidArgument(f"cannot import {path!r}: {error}") from error
    if isinstance(found, type):
        if not issubclass(found, Model):
            raise InvalidArgument(
                f"{path!r} is a class but not a subclass of modelyard.model.Model"
            )
        return found
    if not callable(found):
        raise InvalidArgument(f"{path!r} is neither a Model subclass nor a function")
    return found  # type: ignore[no-any-return]


def model_version(config: ModelConfig, model: Model) -> str:
    """The configured version, else the model's own, else one derived from the checkpoint.

    A local directory gets a digest of its config files' contents and every file's name and
    size: cheap for multi-GB weights, and it changes whenever a checkpoint is re-saved
    differently. A Hugging Face hub id gets the commit it was loaded at (see `hub_commit`).
    """
    if config.version or model.version:
        return config.version or model.version
    if not config.source:
        return "0"
    path = Path(config.source)
    if not path.is_dir():
        revision = str(config.options.get("revision") or "main")
        return hub_commit(config.source, revision) or revision
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(str(file.stat().st_size).encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def hub_commit(repo_id: str, revision: str) -> str | None:
    """The first 12 characters of the commit `revision` names in the local Hugging Face
    cache, or None when it is not cached there.

    A branch or tag ("main") names a different commit after every push, so it cannot tell
    two loads apart; the cache records the commit it downloaded under
    `models--org--name/refs/<revision>`. Only the cache is read: no network call, and
    the model has just been loaded from it.
    """
    # Imported here: only hub-sourced (transformers) models get this far. The cache path
    # is looked up now, as hf_hub_download does, so it is the one the model came from.
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    try:
        ref = repo / "refs" / revision
        if ref.is_file():
            commit = ref.read_text().strip()
        elif (repo / "snapshots" / revision).is_dir():
            commit = revision  # the revision is itself a commit hash
        else:
            return None
    except (OSError, ValueError):  # an unreadable cache, or a revision no path can hold
        return None
    return commit[:12] or None
