"""Service settings from a YAML file plus command-line overrides, shared by every service.

Order of precedence: the command line, then the file, then the environment (each settings
class reads its own MODELYARD_<SERVICE>_ variables).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

S = TypeVar("S", bound=BaseModel)

#: What a bad settings file or value raises; commands turn these into a message and exit 2.
SETTINGS_ERRORS = (ValidationError, ValueError, OSError, yaml.YAMLError)


def read_settings_file(path: Path | None) -> dict[str, Any]:
    """The top-level mapping of a YAML settings file ({} for no file or an empty one)."""
    if path is None:
        return {}
    loaded = yaml.safe_load(path.read_text())
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def build_settings(
    settings_class: type[S],
    path: Path | None,
    overrides: Mapping[str, Any],
    etcd_endpoints: list[str] | None = None,
) -> S:
    """`settings_class` from the file and the overrides that are set.

    `etcd_endpoints` replaces only the endpoints of the file's `etcd:` section, keeping its
    prefix, TLS and user settings.
    """
    values = read_settings_file(path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    if etcd_endpoints:
        values["etcd"] = {**(values.get("etcd") or {}), "endpoints": etcd_endpoints}
    return settings_class(**values)
