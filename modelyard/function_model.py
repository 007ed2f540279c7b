"""Serving a plain Python function as a model.

A worker config may name a function instead of a Model subclass (`class: pkg.mod:fn`).
Each request becomes one call, `fn(**inputs, **parameters)`; a dict result is the outputs,
anything else becomes {"output": result}. The function's keyword-only or defaulted
arguments are its parameters (their defaults are the defaults), the rest its inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from modelyard.model import Model, Outputs, Request
from modelyard.signature import Field


class FunctionModel(Model):
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.task = getattr(fn, "__name__", "function")
        signature = inspect.signature(fn)
        required: list[tuple[str, inspect.Parameter]] = []
        optional: list[tuple[str, inspect.Parameter]] = []
        for name, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            (required if param.default is param.empty else optional).append((name, param))
        self.inputs = tuple(Field(name, "any") for name, _ in required)
        self.parameters = tuple(Field(name, "any") for name, _ in optional)
        self.default_parameters = {name: p.default for name, p in optional}

    def predict(self, batch: list[Request]) -> list[Outputs]:
        results: list[Outputs] = []
        for request in batch:
            result = self._fn(**request.inputs, **request.parameters)
            results.append(result if isinstance(result, dict) else {"output": result})
        return results
