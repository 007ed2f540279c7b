"""Switch nodes: conditions (a referenced value compared with a literal operand) and the
choice of a case."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from modelyard.enum_names import CONDITION_OPS
from modelyard.errors import InvalidArgument
from modelyard.v1 import graph_pb2
from modelyard.values import from_value

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda value, operand: value in operand,
    "not in": lambda value, operand: value not in operand,
}
OPS = tuple(_OPS)
_ORDERING = frozenset({">", ">=", "<", "<="})


def holds(op: str, value: Any, operand: Any) -> bool:
    """Whether `value <op> operand`; raises InvalidArgument when they cannot be compared.

    An ordering comparison with null is false rather than an error: a value from a skipped
    optional node is null, and its switch should fall through to the next case or default.
    """
    compare = _OPS.get(op)
    if compare is None:
        raise InvalidArgument(f"unknown operator {op!r}; use one of {', '.join(OPS)}")
    if op in _ORDERING and (value is None or operand is None):
        return False
    try:
        return bool(compare(value, operand))
    except (TypeError, ValueError):  # ValueError: the truth of a tensor comparison
        raise InvalidArgument(
            f"cannot evaluate {_name(value)} {op} {_name(operand)}"
            + (" (the operand of 'in' must be a list, string or map)" if "in" in op else "")
        ) from None


def _name(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:60]


def pick_case(
    switch: graph_pb2.SwitchNode, value_of: Callable[[str], Any]
) -> tuple[int, graph_pb2.ModelCall] | None:
    """The first case whose condition holds, as (its index, its call); else the default as
    (-1, call); else None. `value_of` resolves a reference. Conditions after the first
    that holds are not evaluated."""
    for index, case in enumerate(switch.cases):
        operand = from_value(case.when.operand) if case.when.HasField("operand") else None
        try:
            if holds(CONDITION_OPS.name(case.when.op), value_of(case.when.value), operand):
                return index, case.call
        except InvalidArgument as error:
            raise InvalidArgument(f"case {index}: {error.message}") from None
    return (-1, switch.default) if switch.HasField("default") else None
