"""Turns a model's config into a `Model` object, and gives it a version."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.function_model import FunctionModel
from modelyard.model import Model
from workers.config import ModelConfig


def create_model(config: ModelConfig) -> Model:
    """A custom model from its class path, or a transformers pipeline for a source."""
    if config.class_path:
        target = import_target(config.class_path)
        model = target() if isinstance(target, type) else FunctionModel(target)
        if config.task:
            model.task = config.task
        return model
    from workers.hf.pipeline_model import PipelineModel

    return PipelineModel(task=config.task)


def import_target(path: str) -> type[Model] | Callable[..., Any]:
    """A Model subclass, or a plain function to wrap, from `package.module:Name`."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"class path {path!r} must look like 'package.module:ClassName'")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {path!r}: {error}") from error
    if isinstance(found, type):
        if not issubclass(found, Model):
            raise ValueError(f"{path!r} is a class but not a subclass of modelyard.model.Model")
        return found
    if not callable(found):
        raise ValueError(f"{path!r} is neither a Model subclass nor a function")
    return found  # type: ignore[no-any-return]


def model_version(config: ModelConfig, model: Model) -> str:
    """The configured version, else the model's own, else a digest of the checkpoint.

    The digest covers the config files' contents and every file's name and size: cheap
    for multi-GB weights, and it changes whenever a checkpoint is re-saved differently.
    """
    if config.version or model.version:
        return config.version or model.version
    path = Path(config.source)
    if not config.source or not path.is_dir():
        # A hub id: transformers caches it under a snapshot named by its commit.
        return config.options.get("revision", "main") if config.source else "0"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(str(file.stat().st_size).encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]
