"""One error hierarchy for every modelyard service.

Each error carries the gRPC status code it maps to and a message meant for the caller.
The server edge (`modelyard_server.grpc_errors`) turns these into statuses; anything else that
escapes becomes INTERNAL with a fixed message, so exception text never leaks.
"""

from __future__ import annotations

import grpc


class ModelyardError(Exception):
    """Base of every error a caller may see. `message` is sent to the client as is."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: The replica that returned it, when a routed client chose one ("" otherwise).
    worker: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ModelyardError):
    """The request does not fit: say what was expected."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ModelyardError):
    """An unknown model, worker or graph."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ModelyardError):
    """No capacity: a full queue, an oversized message."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ModelyardError):
    """Try later or elsewhere: a model still loading or failed, a draining worker."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ModelyardError):
    """The caller's deadline passed before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(ModelyardError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelError(ModelyardError):
    """The model itself failed on an input it accepted (an inference error)."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ModelyardError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        FailedPrecondition,
    )
}


def from_status(code: grpc.StatusCode, message: str) -> ModelyardError:
    """The error class a status code stands for, for clients that catch by class."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    error = ModelyardError(message)
    error.code = code
    return error
