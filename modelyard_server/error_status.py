"""The google.rpc.Status a `ModelyardError` is sent as (grpcio-status), for the server edge.

Its details: an ErrorInfo (reason, domain, metadata) always; a BadRequest when the error
names fields; a ResourceInfo when something was not found. The message stays the error's
own, in both the status and its details (clients check that they agree).

The details travel in trailing metadata, next to the message, and clients built on gRPC's
C core refuse trailers over 8 KiB (`grpc.max_metadata_size`) with RESOURCE_EXHAUSTED,
losing the error. So the two stay within `METADATA_BUDGET`: field violations that do not
fit are left out from the last one on (ErrorInfo's `omittedFieldViolations` counts them),
and an error whose message alone leaves no room goes without details, as it would have
before details existed.
"""

from __future__ import annotations

import math

from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelyard.errors import DOMAIN, FieldViolation, ModelyardError

#: Bytes of trailing metadata (message and details, as sent) an error may use.
METADATA_BUDGET = 7 * 1024
#: The trailer that carries a status's details (a serialized google.rpc.Status).
DETAILS_KEY = "grpc-status-details-bin"

Metadata = tuple[tuple[str, bytes], ...]


def details_metadata(error: ModelyardError) -> Metadata:
    """The trailing metadata that carries `error`'s details, as far as they fit; () when
    not even its ErrorInfo does."""
    room = METADATA_BUDGET - _encoded_length(error.message) - len(DETAILS_KEY)
    violations = list(error.field_violations)
    while True:
        omitted = len(error.field_violations) - len(violations)
        status = _status(error, violations, omitted)
        if _base64_length(status.ByteSize()) <= room:
            return tuple(rpc_status.to_status(status).trailing_metadata)
        if not violations:
            return ()
        violations.pop()


def _status(
    error: ModelyardError, violations: list[FieldViolation], omitted: int
) -> status_pb2.Status:
    metadata = dict(error.metadata)
    if omitted:
        metadata["omittedFieldViolations"] = str(omitted)
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=error.domain or DOMAIN, metadata=metadata
    )
    status.details.add().Pack(info)
    if violations:
        bad = error_details_pb2.BadRequest()
        for field, description in violations:
            bad.field_violations.add(field=field, description=description)
        status.details.add().Pack(bad)
    if error.resource is not None:
        resource = error_details_pb2.ResourceInfo(
            resource_type=error.resource.type, resource_name=error.resource.name
        )
        status.details.add().Pack(resource)
    return status


def _encoded_length(message: str) -> int:
    """The length of grpc-message on the wire: percent-encoded outside printable ASCII."""
    return sum(1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3 for byte in message.encode())


def _base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)
