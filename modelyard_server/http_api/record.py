"""A registered third-party API as etcd stores it (written by admins, no lease):

    /modelyard/registrations/<registration-id>         RegistrationRecord
    /modelyard/health/registrations/<registration-id>  WorkerHealth, the leader's checks

The JSON is a wire format between versions of modelyard, as WorkerInfo's: fields are only
ever added, each says since which schema version it exists, and readers ignore fields they
do not know. Header values hold no secrets (validation allows credentials only as
`${NAME}` references), so the record may be read by anything that reads etcd.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

from modelyard.endpoints import DEFAULT_HTTP_API_TIMEOUT_S, HttpApi

SCHEMA_VERSION = 1
ID_PREFIX = "api-"


def new_registration_id() -> str:
    """A fresh id: "api-" and 8 hex digits (a collision among a cluster's few dozen
    registrations is a one-in-tens-of-millions event, and the caller checks anyway)."""
    return f"{ID_PREFIX}{secrets.token_hex(4)}"


class ApiRecord(BaseModel):
    """`modelyard.v1.HttpApi` as stored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url_template: str  # since 1
    body_template: str  # since 1
    response_path: str  # since 1: JMESPath
    headers: dict[str, str] = Field(default_factory=dict)  # since 1: no secrets, references
    timeout_s: float = DEFAULT_HTTP_API_TIMEOUT_S  # since 1
    health_url: str = ""  # since 1

    @classmethod
    def of(cls, api: HttpApi) -> ApiRecord:
        return cls(
            url_template=api.url_template,
            body_template=api.body_template,
            response_path=api.response_path,
            headers=dict(api.headers),
            timeout_s=api.timeout_s,
            health_url=api.health_url,
        )

    def http_api(self) -> HttpApi:
        return HttpApi(
            url_template=self.url_template,
            body_template=self.body_template,
            response_path=self.response_path,
            headers=dict(self.headers),
            timeout_s=self.timeout_s,
            health_url=self.health_url,
        )


class RegistrationRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION  # since 1
    registration_id: str  # since 1
    model: str  # since 1: the model name it serves under
    owner: str = ""  # since 1
    api: ApiRecord  # since 1
    online: bool = True  # since 1: False keeps it out of every endpoint set
    created_at: float = 0.0  # since 1: unix seconds

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RegistrationRecord:
        return cls.model_validate_json(raw)
