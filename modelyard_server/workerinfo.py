"""What a worker publishes about itself in etcd, and admin intent about it.

The JSON is a wire format between versions of modelyard: fields are only ever added, each
says since which schema version it exists, and readers ignore fields they do not know.

    /modelyard/workers/<id>          WorkerInfo, bound to the worker's lease
    /modelyard/desired/workers/<id>  DesiredWorker, written by admins (no lease)
    /modelyard/health/workers/<id>   WorkerHealth, written by the control-plane leader
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str  # since 1
    task: str = ""  # since 1
    version: str = ""  # since 1
    # since 2: calls of this model the worker serves at once (its batch size: each model
    # has one inference thread); 0 = unknown (written by a worker before 2)
    concurrency: int = 0


class WorkerInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION  # since 1
    worker_id: str  # since 1
    address: str  # since 1: host:port that composers and the control plane dial
    models: tuple[ModelInfo, ...] = ()  # since 1
    tags: dict[str, str] = Field(default_factory=dict)  # since 1: device and user tags
    capacity: int = 0  # since 1: requests it can hold (sum of model queue sizes)
    started_at: float = 0.0  # since 1: unix seconds

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerInfo:
        return cls.model_validate_json(raw)


class DesiredWorker(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    drain: bool = False  # since 1

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DesiredWorker:
        return cls.model_validate_json(raw)


class WorkerHealth(BaseModel):
    """The leader's probe results: whether the process answers and each model's status."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    reachable: bool = True  # since 1
    models: dict[str, bool] = Field(default_factory=dict)  # since 1: model -> serving
    observed_at: float = 0.0  # since 1: unix seconds
    # since 1: the create revision of the worker key these results are for, so results
    # about an earlier registration of the same worker id are not taken for current ones
    registration: int = 0

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerHealth:
        return cls.model_validate_json(raw)
