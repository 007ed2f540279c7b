"""Every value of the API's enums has a name people can write, and reads back as itself."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.enum_names import (
    AGGREGATE_METHODS,
    CONDITION_OPS,
    NODE_STATUSES,
    STREAM_MODES,
    VALUE_KINDS,
    EnumNames,
    kind_of_value_kind,
    value_kind,
)
from modelyard.v1 import composer_pb2, graph_pb2, value_pb2

TABLES = [
    (VALUE_KINDS, value_pb2.ValueKind),
    (STREAM_MODES, graph_pb2.StreamMode),
    (CONDITION_OPS, graph_pb2.ConditionOp),
    (AGGREGATE_METHODS, graph_pb2.AggregateMethod),
    (NODE_STATUSES, composer_pb2.NodeStatus),
]


@pytest.mark.parametrize(("names", "enum"), TABLES)
def test_every_value_but_unspecified_has_a_name_that_reads_back(
    names: EnumNames[Any], enum: Any
) -> None:
    # an enum value added to a .proto without a name here fails this test
    for proto_name, value in enum.items():
        if proto_name.endswith("_UNSPECIFIED") and enum is not graph_pb2.StreamMode:
            assert value not in names and names.name(value) == proto_name
            continue
        assert names.parse(names.name(value)) == value
        assert names.parse(proto_name) == value


def test_unset_and_unknown_values_are_written_so_that_they_read_as_nothing() -> None:
    assert VALUE_KINDS.name(value_pb2.VALUE_KIND_UNSPECIFIED) == "VALUE_KIND_UNSPECIFIED"
    assert VALUE_KINDS.parse("VALUE_KIND_UNSPECIFIED") is None
    assert VALUE_KINDS.parse("unspecified") is None
    assert CONDITION_OPS.name(graph_pb2.ConditionOp.ValueType(99)) == "99"  # a newer peer's


def test_signature_kinds_and_wire_kinds_match_one_to_one() -> None:
    assert value_kind("any") == value_pb2.VALUE_KIND_ANY
    assert kind_of_value_kind(value_pb2.VALUE_KIND_TENSOR) == "tensor"
    assert kind_of_value_kind(value_pb2.VALUE_KIND_UNSPECIFIED) is None
