"""The names people write for the API's closed sets (graph files, the graph builder, the
command line, the Python clients), and the enum values they stand for:

    VALUE_KINDS.parse("string")              # VALUE_KIND_STRING
    CONDITION_OPS.parse("==")                # CONDITION_OP_EQ; also "eq", "CONDITION_OP_EQ"
    AGGREGATE_METHODS.name(g.AGGREGATE_METHOD_MAJORITY_VOTE)   # "majority_vote"

Every value also goes by its proto name ("CONDITION_OP_EQ", as the proto's JSON form and
grpcurl write it) and by that name's lowercase suffix ("eq", "not_in"), so a graph reads
the same whichever way it was written. The first name a table gives a value is the one
written back (`name`), so files keep the names people wrote them with ("==", "segment");
a value without one (an unset kind) is written as its proto name, which no file may use.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Generic, TypeVar, get_args

from modelyard.signature import Kind
from modelyard.v1 import composer_pb2, graph_pb2, value_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

E = TypeVar("E", bound=int)


class EnumNames(Generic[E]):
    """The names of one enum's values; values not in `names` (the zero value, unless a
    table names it) have none and parse from no name."""

    def __init__(self, enum: _EnumTypeWrapper[E], names: Mapping[str, E]) -> None:
        self.names = tuple(names)  # in the table's order, for messages
        self._enum = enum
        self._canonical: dict[int, str] = {}
        for name, value in names.items():
            self._canonical.setdefault(value, name)
        self._values: dict[str, E] = dict(names)
        prefix = enum.keys()[0].removesuffix("UNSPECIFIED")  # the zero value's: "CONDITION_OP_"
        for proto_name, number in enum.items():
            if number in self._canonical:
                self._values.setdefault(proto_name, number)
                self._values.setdefault(proto_name.removeprefix(prefix).lower(), number)

    def parse(self, text: str) -> E | None:
        """The value `text` names, or None."""
        return self._values.get(text)

    def did_you_mean(self, text: str) -> str:
        """ " (did you mean 'x'?)" for a near miss of a name, else ""."""
        close = difflib.get_close_matches(text, self.names, n=1)
        return f" (did you mean '{close[0]}'?)" if close else ""

    def value(self, name: str) -> E:
        """The value of a name the code itself holds; KeyError for any other."""
        return self._values[name]

    def name(self, value: E) -> str:
        """The name written for `value`: its first name, else its proto name, else (a
        number from a newer peer) the number."""
        if value in self._canonical:
            return self._canonical[value]
        try:
            return self._enum.Name(value)
        except ValueError:
            return str(value)

    def __contains__(self, value: object) -> bool:
        """Whether `value` is one of the named enum values (not the zero value, say)."""
        return value in self._canonical


VALUE_KINDS: EnumNames[value_pb2.ValueKind.ValueType] = EnumNames(
    value_pb2.ValueKind,
    {
        "any": value_pb2.VALUE_KIND_ANY,
        "bool": value_pb2.VALUE_KIND_BOOL,
        "int": value_pb2.VALUE_KIND_INT,
        "float": value_pb2.VALUE_KIND_FLOAT,
        "string": value_pb2.VALUE_KIND_STRING,
        "bytes": value_pb2.VALUE_KIND_BYTES,
        "list": value_pb2.VALUE_KIND_LIST,
        "map": value_pb2.VALUE_KIND_MAP,
        "tensor": value_pb2.VALUE_KIND_TENSOR,
    },
)


_KIND_OF: dict[int, Kind] = {VALUE_KINDS.value(kind): kind for kind in get_args(Kind)}


def value_kind(kind: Kind) -> value_pb2.ValueKind.ValueType:
    """The wire kind of a signature's kind."""
    return VALUE_KINDS.value(kind)


def kind_of_value_kind(value: int) -> Kind | None:
    """The signature kind a wire kind stands for; None for the zero value or an unknown one."""
    return _KIND_OF.get(value)


STREAM_MODES: EnumNames[graph_pb2.StreamMode.ValueType] = EnumNames(
    graph_pb2.StreamMode,
    {
        "none": graph_pb2.STREAM_MODE_UNSPECIFIED,
        "chunk": graph_pb2.STREAM_MODE_CHUNK,
        "segment": graph_pb2.STREAM_MODE_SEGMENT,
    },
)

CONDITION_OPS: EnumNames[graph_pb2.ConditionOp.ValueType] = EnumNames(
    graph_pb2.ConditionOp,
    {
        "==": graph_pb2.CONDITION_OP_EQ,
        "!=": graph_pb2.CONDITION_OP_NE,
        ">": graph_pb2.CONDITION_OP_GT,
        ">=": graph_pb2.CONDITION_OP_GE,
        "<": graph_pb2.CONDITION_OP_LT,
        "<=": graph_pb2.CONDITION_OP_LE,
        "in": graph_pb2.CONDITION_OP_IN,
        "not in": graph_pb2.CONDITION_OP_NOT_IN,
    },
)

AGGREGATE_METHODS: EnumNames[graph_pb2.AggregateMethod.ValueType] = EnumNames(
    graph_pb2.AggregateMethod,
    {
        "majority_vote": graph_pb2.AGGREGATE_METHOD_MAJORITY_VOTE,
        "weighted_average": graph_pb2.AGGREGATE_METHOD_WEIGHTED_AVERAGE,
        "concat": graph_pb2.AGGREGATE_METHOD_CONCAT,
        "collect": graph_pb2.AGGREGATE_METHOD_COLLECT,
        "list": graph_pb2.AGGREGATE_METHOD_LIST,
    },
)

NODE_STATUSES: EnumNames[composer_pb2.NodeStatus.ValueType] = EnumNames(
    composer_pb2.NodeStatus,
    {
        "ok": composer_pb2.NODE_STATUS_OK,
        "failed": composer_pb2.NODE_STATUS_FAILED,
        "skipped": composer_pb2.NODE_STATUS_SKIPPED,
    },
)
