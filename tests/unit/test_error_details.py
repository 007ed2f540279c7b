"""Errors a program can read: the reason, field paths and resource an error carries, as the
server edge sends them (google.rpc.Status details) and the clients read them back."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from modelyard.errors import (
    DOMAIN,
    FieldViolation,
    InvalidArgument,
    ModelError,
    ModelyardError,
    NotFound,
    Reason,
    Resource,
    ResourceExhausted,
    Unavailable,
    from_rpc_error,
    from_status,
)
from modelyard.graph_spec import graph_from_dict
from modelyard.signature import Field, check_inputs, resolve_parameters
from modelyard.v1 import value_pb2
from modelyard.values import from_value_map, to_value
from modelyard_server.error_status import METADATA_BUDGET, details_metadata


class FailedCall(grpc.RpcError):
    """What a failed call raises, as far as a client reads it."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: Any = ()) -> None:
        self._code, self._message, self._trailers = code, message, tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailers


def over_the_wire(error: ModelyardError) -> ModelyardError:
    """`error` sent by the server edge and read back by a client."""
    return from_rpc_error(FailedCall(error.code, error.message, details_metadata(error)))


def sent_status(error: ModelyardError) -> status_pb2.Status:
    ((key, value),) = details_metadata(error)
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


def test_reason_fields_resource_and_metadata_cross_the_wire() -> None:
    sent = NotFound(
        "model 'gtp2' is not served here; this worker serves: gpt2",
        reason=Reason.MODEL_NOT_FOUND,
        resource=Resource("model", "gtp2"),
        metadata={"model": "gtp2"},
    )
    read = over_the_wire(sent)
    assert type(read) is NotFound
    assert (read.code, read.message) == (grpc.StatusCode.NOT_FOUND, sent.message)
    assert (read.reason, read.domain) == ("MODEL_NOT_FOUND", DOMAIN)
    assert read.resource == ("model", "gtp2")
    assert read.metadata == {"model": "gtp2"}
    assert read.field_violations == ()


def test_the_status_holds_error_info_bad_request_and_resource_info_as_any_client_reads_them() -> (
    None
):
    sent = InvalidArgument(
        "graph 'g' is invalid: two problems",
        reason=Reason.GRAPH_INVALID,
        field_violations=[("nodes[0].model", "no model"), ("outputs.label", "no such node")],
    )
    status = sent_status(sent)
    assert (status.code, status.message) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        sent.message,
    )
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.domain) == ("GRAPH_INVALID", "modelyard.dev")
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("nodes[0].model", "no model"),
        ("outputs.label", "no such node"),
    ]
    assert len(status.details) == 2  # no ResourceInfo: nothing was not found


def test_one_field_is_described_by_the_message() -> None:
    error = InvalidArgument("input 'text' must be a string", field="inputs.text")
    assert error.field == "inputs.text"
    assert error.field_violations == (("inputs.text", "input 'text' must be a string"),)
    assert InvalidArgument("no field").field == ""


def test_each_class_has_its_generic_reason_until_a_raise_site_gives_a_specific_one() -> None:
    assert InvalidArgument("x").reason == "INVALID_ARGUMENT"
    assert Unavailable("x").reason == "UNAVAILABLE"
    assert ModelError("x").reason == "MODEL_ERROR"
    assert ModelyardError("x").reason == "INTERNAL"
    assert ResourceExhausted("x", reason=Reason.QUEUE_FULL).reason == "QUEUE_FULL"


def test_an_error_without_details_gets_the_generic_reason_and_no_domain() -> None:
    read = from_rpc_error(FailedCall(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert type(read) is Unavailable
    assert (read.reason, read.domain, read.field_violations) == ("UNAVAILABLE", "", ())
    other = from_status(grpc.StatusCode.ABORTED, "no")
    assert (type(other), other.code, other.reason) == (
        ModelyardError,
        grpc.StatusCode.ABORTED,
        "ABORTED",
    )


def test_details_that_contradict_the_status_are_not_trusted() -> None:
    trailers = details_metadata(InvalidArgument("another message", reason=Reason.INPUT_MISSING))
    read = from_rpc_error(FailedCall(grpc.StatusCode.INVALID_ARGUMENT, "the message", trailers))
    assert (read.message, read.reason, read.domain) == ("the message", "INVALID_ARGUMENT", "")


def test_an_unknown_reason_from_a_newer_server_is_kept_as_sent() -> None:
    sent = Unavailable("later", reason="SOMETHING_NEW")
    assert over_the_wire(sent).reason == "SOMETHING_NEW"


def test_within_prefixes_the_message_and_every_field_path_and_keeps_the_rest() -> None:
    worker_error = InvalidArgument(
        "input 'text' must be a string, got an integer",
        reason=Reason.INPUT_WRONG_KIND,
        field="inputs.text",
        metadata={"model": "sentiment"},
    )
    worker_error.worker = "w1"
    moved = worker_error.within("node 'mood'", "nodes[1]", node="mood")
    assert type(moved) is InvalidArgument
    assert (
        moved.message == str(moved) == "node 'mood': input 'text' must be a string, got an integer"
    )
    assert moved.field_violations == (
        ("nodes[1].inputs.text", "input 'text' must be a string, got an integer"),
    )
    assert (moved.reason, moved.worker) == ("INPUT_WRONG_KIND", "w1")
    assert moved.metadata == {"model": "sentiment", "node": "mood"}
    assert worker_error.field == "inputs.text"  # the original is left as it was


def test_within_adds_no_field_to_an_error_that_names_none() -> None:
    full = ResourceExhausted("queue full", reason=Reason.QUEUE_FULL)
    moved = full.within("node 'a'", "nodes[0]")
    assert (moved.message, moved.field_violations, moved.reason) == (
        "node 'a': queue full",
        (),
        "QUEUE_FULL",
    )
    indexed = InvalidArgument("bad", field="[2].text").within("", "results")
    assert indexed.field == "results[2].text"


def test_violations_that_would_overflow_the_trailers_are_left_out_and_counted() -> None:
    violations = [FieldViolation(f"nodes[{i}].model", "x" * 100) for i in range(200)]
    sent = InvalidArgument("graph 'big' is invalid", field_violations=violations)
    ((_, value),) = details_metadata(sent)
    assert len(value) * 4 / 3 + len(sent.message) <= METADATA_BUDGET
    read = over_the_wire(sent)
    kept = len(read.field_violations)
    assert 0 < kept < 200
    assert read.field_violations == tuple(violations[:kept])  # the first ones, in order
    assert read.metadata == {"omittedFieldViolations": str(200 - kept)}


def test_a_message_that_leaves_no_room_goes_without_details() -> None:
    # percent-encoded on the wire: each "é" takes 6 bytes there
    sent = InvalidArgument("é" * (METADATA_BUDGET // 6), reason=Reason.GRAPH_INVALID)
    assert details_metadata(sent) == ()
    assert over_the_wire(sent).reason == "INVALID_ARGUMENT"


# --- raise sites: the signature and value checks ------------------------------------------

INPUTS = (Field("text", "string"), Field("mode", "string", choices=("a", "b"), required=False))
PARAMS = (Field("temperature", "float"),)


@pytest.mark.parametrize(
    ("inputs", "reason", "field"),
    [
        ({}, Reason.INPUT_MISSING, "inputs.text"),
        ({"text": "x", "txt": "x"}, Reason.INPUT_UNKNOWN, "inputs.txt"),
        ({"text": 3}, Reason.INPUT_WRONG_KIND, "inputs.text"),
        ({"text": "x", "mode": "c"}, Reason.INPUT_INVALID, "inputs.mode"),
    ],
)
def test_an_input_that_does_not_fit_names_its_reason_and_field(
    inputs: dict[str, Any], reason: Reason, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_inputs(INPUTS, inputs)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.field_violations[0].description == caught.value.message


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"temperature": "hot"}, Reason.PARAMETER_INVALID, "parameters.temperature"),
        ({"temperature": float("nan")}, Reason.PARAMETER_INVALID, "parameters.temperature"),
        ({"top_k": 3}, Reason.PARAMETER_UNKNOWN, "parameters.top_k"),
    ],
)
def test_a_parameter_that_does_not_fit_names_its_reason_and_field(
    overrides: dict[str, Any], reason: Reason, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_parameters(PARAMS, {"temperature": 1.0}, overrides)
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_a_malformed_value_names_the_request_field_it_is_in() -> None:
    tensor = to_value(np.zeros(2, dtype="float32"))
    tensor.tensor_value.data = b"\x00" * 7  # not a whole number of floats
    with pytest.raises(InvalidArgument) as caught:
        from_value_map({"ok": to_value(1), "x": tensor}, "inputs")
    assert caught.value.message == "tensor data is 7 bytes, not a multiple of 4"
    assert (caught.value.reason, caught.value.field) == (Reason.VALUE_MALFORMED, "inputs.x")
    with pytest.raises(InvalidArgument) as unset:
        from_value_map({"x": value_pb2.Value()}, "parameters")
    assert unset.value.field == "parameters.x"


def test_a_graph_file_of_the_wrong_shape_is_graph_invalid_as_the_composer_says() -> None:
    with pytest.raises(InvalidArgument) as caught:
        graph_from_dict({"name": "g", "nodes": [{"name": "a", "modle": "echo"}]})
    assert caught.value.message.startswith("node 'a': unknown key 'modle'")
    assert caught.value.reason == "GRAPH_INVALID"
