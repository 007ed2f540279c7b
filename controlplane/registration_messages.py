"""Registered third-party APIs in and out of protobuf (`modelyard.v1.HttpApi`,
`Registration`). What an admin reads back never holds a header's value unless it is a
`${NAME}` reference; endpoint sets carry the headers as stored (which validation made
free of secrets), since callers need them to make the calls."""

from __future__ import annotations

from controlplane.api_view import ApiStatus
from modelyard.endpoints import HttpApi
from modelyard.times import duration, timestamp
from modelyard.v1 import controlplane_pb2 as pb
from modelyard_server.http_api.header_secrets import shown


def http_api_message(api: HttpApi, *, redact: bool) -> pb.HttpApi:
    headers = {name: shown(value) if redact else value for name, value in api.headers.items()}
    return pb.HttpApi(
        url_template=api.url_template,
        body_template=api.body_template,
        headers=headers,
        response_path=api.response_path,
        timeout=duration(api.timeout_s),
        health_url=api.health_url,
    )


def registration_message(status: ApiStatus) -> pb.Registration:
    record = status.record
    message = pb.Registration(
        registration_id=record.registration_id,
        model=record.model,
        owner=record.owner,
        http_api=http_api_message(record.api.http_api(), redact=True),
        online=record.online,
        healthy=status.healthy,
    )
    if record.created_at:
        message.create_time.CopyFrom(timestamp(record.created_at))
    return message
