"""One error hierarchy for every modelyard service, and its details a program can read.

Each error carries the gRPC status code it maps to, a message meant for people, and the
details a program branches on: a stable `reason` (a `Reason`, in `DOMAIN`), the request
fields that were wrong (`field_violations`, paths such as `inputs.text`), the resource
that was not found (`resource`) and a few `metadata` strings. The server edge
(`modelyard_server.grpc_errors`) sends them as google.rpc.Status details (ErrorInfo,
BadRequest, ResourceInfo), which any gRPC client can read; `from_rpc_error` reads them back.
Anything else that escapes a server becomes INTERNAL with a fixed message, so exception
text never leaks.

    except modelyard.errors.InvalidArgument as error:
        if error.reason == Reason.INPUT_MISSING:
            ask_for(error.field)        # "inputs.text"
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

#: The ErrorInfo domain of every reason below.
DOMAIN = "modelyard.dev"


class Reason(enum.StrEnum):
    """The stable reasons modelyard gives (ErrorInfo.reason). New ones may come; a program
    should treat one it does not know by the error's status code. The last group are the
    generic reasons: the status code's name, for errors no more specific reason fits."""

    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    GRAPH_NOT_FOUND = "GRAPH_NOT_FOUND"
    WORKER_NOT_FOUND = "WORKER_NOT_FOUND"
    INPUT_MISSING = "INPUT_MISSING"
    INPUT_UNKNOWN = "INPUT_UNKNOWN"
    INPUT_WRONG_KIND = "INPUT_WRONG_KIND"
    INPUT_INVALID = "INPUT_INVALID"
    PARAMETER_UNKNOWN = "PARAMETER_UNKNOWN"
    PARAMETER_INVALID = "PARAMETER_INVALID"
    VALUE_MALFORMED = "VALUE_MALFORMED"
    GRAPH_INVALID = "GRAPH_INVALID"
    QUEUE_FULL = "QUEUE_FULL"
    OVERLOADED = "OVERLOADED"
    MODEL_LOADING = "MODEL_LOADING"
    MODEL_FAILED = "MODEL_FAILED"
    WORKER_DRAINING = "WORKER_DRAINING"
    NO_REPLICA = "NO_REPLICA"
    NOT_SYNCED = "NOT_SYNCED"
    MODEL_ERROR = "MODEL_ERROR"
    # generic
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class FieldViolation(NamedTuple):
    """One request field that was wrong: its path and what was wrong with it."""

    field: str  # "inputs.text", "parameters.temperature", "nodes[2].inputs.text"
    description: str


class Resource(NamedTuple):
    """What was not found."""

    type: str  # "model", "graph", "worker"
    name: str


class ModelyardError(Exception):
    """Base of every error a caller may see. `message` is sent to the client as is.

    `reason` is a `Reason` for errors modelyard raises; one read from a server is the
    string it sent (`domain` says whose reasons they are: "" when it sent none)."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = Reason.INTERNAL
    #: The replica that returned it, when a routed client chose one ("" otherwise).
    worker: str = ""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str = "",
        field_violations: Iterable[tuple[str, str]] = (),
        resource: Resource | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str = DOMAIN,
    ) -> None:
        """`field`: the one field path to blame, described by the message itself; or
        several in `field_violations`."""
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.domain = domain
        violations = tuple(FieldViolation(*v) for v in field_violations)
        self.field_violations = violations or ((FieldViolation(field, message),) if field else ())
        self.resource = resource
        self.metadata = dict(metadata or {})

    @property
    def field(self) -> str:
        """The first field to blame, or "" when the error names none."""
        return self.field_violations[0].field if self.field_violations else ""

    def within(self, where: str, path: str = "", **metadata: str) -> ModelyardError:
        """This error as part of a larger request: the message prefixed "<where>: ", each
        field path under `path` ("nodes[1]" makes "inputs.text" "nodes[1].inputs.text"),
        `metadata` added; its class, code, reason, resource and worker kept."""
        moved = copy.copy(self)
        moved.message = f"{where}: {self.message}" if where else self.message
        moved.args = (moved.message,)
        if path:
            moved.field_violations = tuple(
                FieldViolation(_join(path, v.field), v.description) for v in self.field_violations
            )
        moved.metadata = {**self.metadata, **metadata}
        return moved


def _join(path: str, field: str) -> str:
    if not field:
        return path
    return f"{path}{field}" if field.startswith("[") else f"{path}.{field}"


class InvalidArgument(ModelyardError):
    """The request does not fit: say what was expected."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = Reason.INVALID_ARGUMENT


class NotFound(ModelyardError):
    """An unknown model, worker or graph."""

    code = grpc.StatusCode.NOT_FOUND
    reason = Reason.NOT_FOUND


class ResourceExhausted(ModelyardError):
    """No capacity: a full queue, an oversized message. `retry_after`: when the server can
    say, the seconds to wait before trying again (sent as `grpc-retry-pushback-ms`)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = Reason.RESOURCE_EXHAUSTED
    retry_after: float | None = None


class Unavailable(ModelyardError):
    """Try later or elsewhere: a model still loading or failed, a draining worker."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = Reason.UNAVAILABLE


class DeadlineExceeded(ModelyardError):
    """The caller's deadline passed before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = Reason.DEADLINE_EXCEEDED


class FailedPrecondition(ModelyardError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = Reason.FAILED_PRECONDITION


class Unauthenticated(ModelyardError):
    """No credentials, or a token or certificate the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = Reason.UNAUTHENTICATED


class PermissionDenied(ModelyardError):
    """A known caller without the role the call needs (a serving token on an admin RPC)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = Reason.PERMISSION_DENIED


class ModelError(ModelyardError):
    """The model itself failed on an input it accepted (an inference error)."""

    code = grpc.StatusCode.INTERNAL
    reason = Reason.MODEL_ERROR


_BY_CODE: dict[grpc.StatusCode, type[ModelyardError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
    )
}


def from_status(
    code: grpc.StatusCode, message: str, details: status_pb2.Status | None = None
) -> ModelyardError:
    """The error class a status code stands for, for clients that catch by class, with
    what `details` (a google.rpc.Status) say. Without an ErrorInfo the reason is the generic
    one, the code's name, and `domain` is ""."""
    cls = _BY_CODE.get(code, ModelyardError)
    error = cls(message, reason=code.name, domain="")
    if cls is ModelyardError:
        error.code = code
    for detail in details.details if details is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        resource = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):  # False, and nothing read, for a detail of another type
            error.reason, error.domain, error.metadata = (
                info.reason,
                info.domain,
                dict(info.metadata),
            )
        elif detail.Unpack(bad):
            error.field_violations = tuple(
                FieldViolation(v.field, v.description) for v in bad.field_violations
            )
        elif detail.Unpack(resource):
            error.resource = Resource(resource.resource_type, resource.resource_name)
    return error


def from_rpc_error(error: grpc.RpcError) -> ModelyardError:
    """The error a failed call (sync or asyncio) stands for, its details included."""
    try:
        details = rpc_status.from_call(error)
    except ValueError:  # details that contradict the status itself: not to be trusted
        details = None
    return from_status(error.code(), error.details() or "", details)
