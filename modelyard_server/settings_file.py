"""Service settings from a YAML file plus command-line overrides, shared by every service.

Order of precedence: the command line, then the file, then the environment (each settings
class reads its own MODELYARD_<SERVICE>_ variables).

A mistake in a file is worded for the person who wrote it: `read_yaml` names the file and
line (not PyYAML's "<unicode string>"), and `settings_problem` turns pydantic's report into
one line per field path ("models[0].batching.max_batch_size: ..."), with a did-you-mean for
a misspelt key and no pydantic links.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modelyard_server.telemetry.settings import TelemetrySettings, tracing_config

S = TypeVar("S", bound=BaseModel)


class FileProblem(ValueError):
    """A file that cannot be read or parsed; the message names the file (and the line)."""


#: What a bad settings file or value raises; commands turn these into a message and exit 2.
SETTINGS_ERRORS = (ValidationError, ValueError, OSError, yaml.YAMLError)


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; FileProblem naming the file (and line) when it cannot
    be read or parsed."""
    try:
        with path.open(encoding="utf-8") as file:
            return yaml.safe_load(file)
    except OSError as error:
        raise FileProblem(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise FileProblem(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise FileProblem(yaml_problem(path, error)) from None


def yaml_problem(source: Path | str, error: yaml.YAMLError) -> str:
    """One line: "stack.yaml, line 3: mapping values are not allowed here (while ...)"."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"{source}: not valid YAML: {error}"
    line = error.problem_mark.line + 1
    message = f"{source}, line {line}: {error.problem}"
    if error.context:
        start = error.context_mark.line + 1 if error.context_mark is not None else line
        message += f" ({error.context}" + (f" from line {start})" if start != line else ")")
    return message


def read_settings_file(path: Path | None) -> dict[str, Any]:
    """The top-level mapping of a YAML settings file ({} for no file or an empty one)."""
    if path is None:
        return {}
    loaded = read_yaml(path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise FileProblem(f"{path}: expected a mapping at the top level")
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
    settings = settings_class(**values)
    telemetry = getattr(settings, "telemetry", None)
    if isinstance(telemetry, TelemetrySettings):
        # the OTEL_* variables as well as the settings: a value tracing cannot honour is a
        # settings mistake, told in one line before the service starts (ValueError)
        tracing_config(telemetry, default_service_name="", environ=os.environ)
    return settings


def settings_problem(error: Exception, settings_class: type[BaseModel] | None = None) -> str:
    """What is wrong, on one line: each pydantic error as "field.path: message" (joined by
    "; "), an unknown key with a did-you-mean among the keys `settings_class` has there.
    Other errors (FileProblem, a validator's ValueError) are already worded for people."""
    if not isinstance(error, ValidationError):
        return str(error)
    return "; ".join(_problem(item, settings_class) for item in error.errors(include_url=False))


def _problem(item: Mapping[str, Any], settings_class: type[BaseModel] | None) -> str:
    loc: tuple[int | str, ...] = tuple(item["loc"])
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        known = _keys_at(settings_class, loc[:-1])
        message = "unknown setting" + _hint(str(loc[-1]), known)
    elif isinstance(item.get("input"), int | float | str) and len(repr(item["input"])) <= 40:
        message += f", got {item['input']!r}"
    where = _path(loc)
    return f"{where}: {message}" if where else message


def _path(loc: Sequence[int | str]) -> str:
    """("models", 0, "batching") -> "models[0].batching"."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(known)})" if known else ""


def _keys_at(settings_class: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    """The keys the settings model nested at `loc` takes, as a file spells them (aliases)."""
    annotation: Any = settings_class
    for step in loc:
        model = _model_in(annotation)
        if model is not None and isinstance(step, str):
            fields = {f.alias or name: f for name, f in model.model_fields.items()}
            field = fields.get(step) or model.model_fields.get(step)
            annotation = field.annotation if field is not None else None
        else:  # a list element or a mapping value: the container's last type argument
            args = typing.get_args(_strip_optional(annotation))
            annotation = args[-1] if args else None
    model = _model_in(annotation)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
