"""Signatures: the named inputs, outputs and parameters a model declares, and their checks.

A request's inputs are checked against the model's input fields before it is queued, so a
malformed request fails alone with INVALID_ARGUMENT that names what was expected, and never
reaches (or spoils) a batch.

Two conversions are made, both lossless: an integer for a float becomes that float, and a
list of numbers for a tensor that declares its dtype becomes a tensor of that dtype (what
JSON clients such as grpcurl can send), e.g.

    Field("features", "tensor", "A vector of 4.", dtype="float32")   # takes [1, 2, 3, 4]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelyard.errors import InvalidArgument, Reason
from modelyard.names import quote
from modelyard.values import DTYPES, tensor_from_list

Kind = Literal["any", "bool", "int", "float", "string", "bytes", "list", "map", "tensor"]


@dataclass(frozen=True, slots=True)
class Field:
    """One named input, output or parameter."""

    name: str
    kind: Kind
    description: str = ""
    required: bool = True
    element_kind: Kind = "any"
    # For parameters: the accepted values, when they are a closed set.
    choices: tuple[Any, ...] = ()
    # For tensors: the element type (a numpy dtype name, e.g. "float32"), which a list
    # given for it is converted to. Unset: tensors of any dtype, and no lists.
    dtype: str = ""

    def __post_init__(self) -> None:
        # a model's own mistake: fails when its class is defined, not at its first call
        if self.dtype and self.kind != "tensor":
            raise ValueError(f"field '{self.name}': only tensors have a dtype")
        if self.dtype and self.dtype not in DTYPES:
            raise ValueError(f"field '{self.name}': dtype {self.dtype!r} is not one of {DTYPES}")


def _is_kind(value: Any, kind: Kind) -> bool:
    match kind:
        case "any":
            return True
        case "bool":
            return isinstance(value, bool)
        case "int":
            return isinstance(value, int) and not isinstance(value, bool)
        case "float":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "string":
            return isinstance(value, str)
        case "bytes":
            return isinstance(value, bytes)
        case "list":
            return isinstance(value, list)
        case "map":
            return isinstance(value, dict)
        case "tensor":
            return isinstance(value, np.ndarray)


def _describe(field: Field) -> str:
    if field.kind == "list" and field.element_kind != "any":
        return f"a list of {field.element_kind}s"
    if field.dtype:
        items = "bools" if field.dtype == "bool" else "numbers"
        return f"a {field.dtype} tensor or a rectangular list of {items}"
    return {"any": "any value", "int": "an integer", "map": "a map"}.get(
        field.kind, f"a {field.kind}"
    )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, np.ndarray):
        return f"a tensor of shape {list(value.shape)}"
    names = {
        bool: "a bool",
        int: "an integer",
        float: "a float",
        str: "a string",
        bytes: "bytes",
        list: "a list",
        dict: "a map",
    }
    return names.get(type(value), type(value).__name__)


def check_value(what: str, field: Field, value: Any) -> Any:
    """Checks one value against its field; returns it, an int widened for a float, a list
    converted for a tensor with a dtype."""
    if field.dtype and isinstance(value, list):
        try:
            return tensor_from_list(value, field.dtype)
        except ValueError as why:
            raise _refused(
                what, field, f"{what} '{field.name}' must be {_describe(field)}: {why}", kind=True
            ) from None
    if not _is_kind(value, field.kind):
        raise _refused(
            what,
            field,
            f"{what} '{field.name}' must be {_describe(field)}, got {_type_name(value)}",
            kind=True,
        )
    if field.kind == "list" and field.element_kind != "any":
        for i, item in enumerate(value):
            if not _is_kind(item, field.element_kind):
                raise _refused(
                    what,
                    field,
                    f"{what} '{field.name}' must be {_describe(field)}; "
                    f"element {i} is {_type_name(item)}",
                    kind=True,
                )
    if field.choices and value not in field.choices:
        allowed = ", ".join(repr(c) for c in field.choices)
        got = quote(value) if isinstance(value, str) else repr(value)
        raise _refused(what, field, f"{what} '{field.name}' must be one of {allowed}, got {got}")
    if field.kind == "float" and isinstance(value, float) and not math.isfinite(value):
        # NaN passes every `<=`/`>` range check a task makes and then breaks the model
        raise _refused(what, field, f"{what} '{field.name}' must be a finite number, got {value}")
    if field.kind == "float" and isinstance(value, int):
        return float(value)
    return value


#: The request field each `what` of check_value is in (its paths: "inputs.text").
_SECTIONS = {"input": "inputs", "parameter": "parameters"}


def _refused(what: str, field: Field, message: str, *, kind: bool = False) -> InvalidArgument:
    """The error for a value that does not fit `field` (`kind`: not even its kind), with
    its reason and field path; a value checked outside a request (a graph input's default)
    has neither."""
    section = _SECTIONS.get(what)
    if section is None:
        return InvalidArgument(message)
    if section == "parameters":
        reason = Reason.PARAMETER_INVALID
    else:
        reason = Reason.INPUT_WRONG_KIND if kind else Reason.INPUT_INVALID
    return InvalidArgument(message, reason=reason, field=f"{section}.{field.name}")


def check_inputs(fields: Sequence[Field], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a request's inputs: every required one present, none unknown, kinds right."""
    known = {f.name: f for f in fields}
    if known:
        unknown = [name for name in inputs if name not in known]
        if unknown:
            raise InvalidArgument(
                f"unknown input {quote(unknown[0])}; this model takes: {_names(fields)}",
                reason=Reason.INPUT_UNKNOWN,
                field=f"inputs.{unknown[0]}",
            )
    checked: dict[str, Any] = {}
    for field in fields:
        if field.name in inputs:
            checked[field.name] = check_value("input", field, inputs[field.name])
        elif field.required:
            raise InvalidArgument(
                f"missing input '{field.name}' ({_describe(field)}); "
                f"this model takes: {_names(fields)}",
                reason=Reason.INPUT_MISSING,
                field=f"inputs.{field.name}",
            )
    if not known:  # a model that declares no inputs takes anything
        return dict(inputs)
    return checked


def check_text_size(inputs: Mapping[str, Any], limit: int) -> None:
    """Refuses inputs whose text (every string in them, in lists and maps too) adds up to
    more than `limit` characters, before a tokenizer or a queue sees it."""
    total = sum(_characters(value) for value in inputs.values())
    if total > limit:
        raise InvalidArgument(
            f"the inputs hold {total} characters of text; this model takes at most {limit} "
            "(its max_input_chars)"
        )


def _characters(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    if isinstance(value, dict):
        return sum(len(key) + _characters(item) for key, item in value.items())
    return 0


def resolve_parameters(
    fields: Sequence[Field], defaults: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The defaults with a request's overrides applied, each override checked."""
    if not overrides:
        return dict(defaults)
    known = {f.name: f for f in fields}
    resolved = dict(defaults)
    for name, value in overrides.items():
        field = known.get(name)
        if field is None:
            accepted = _names(fields) if fields else "none"
            raise InvalidArgument(
                f"unknown parameter {quote(name)}; this model accepts: {accepted}",
                reason=Reason.PARAMETER_UNKNOWN,
                field=f"parameters.{name}",
            )
        # null resets a parameter to "not set", which pipelines read as their own default
        resolved[name] = None if value is None else check_value("parameter", field, value)
    return resolved


def _names(fields: Sequence[Field]) -> str:
    return ", ".join(f.name for f in fields)
