"""modelyard.v1.ControlPlane over gRPC: protobuf in, core call, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc.aio

from controlplane.admin import Admin
from controlplane.api_view import ApiStatus
from controlplane.hub import EndpointHub
from controlplane.registration_messages import http_api_message, registration_message
from controlplane.registrations import RegistrationAdmin
from controlplane.view import WorkerView
from modelyard.endpoint_watch import http_api_of
from modelyard.endpoints import Endpoint, EndpointSet, Load
from modelyard.errors import Reason, Unavailable
from modelyard.selectors import parse_selector
from modelyard.times import duration, timestamp
from modelyard.v1 import controlplane_pb2 as pb
from modelyard.v1 import controlplane_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ControlPlaneServicer(controlplane_pb2_grpc.ControlPlaneServicer):
    def __init__(
        self,
        admin: Admin,
        hub: EndpointHub,
        replica_id: str,
        is_leader: Callable[[], bool],
        synced: asyncio.Event,
        *,
        registrations: RegistrationAdmin,
    ) -> None:
        self._synced = synced
        self._admin = admin
        self._registrations = registrations
        self._hub = hub
        self._replica_id = replica_id
        self._is_leader = is_leader

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Context
    ) -> pb.ListWorkersResponse:
        self._require_synced()
        workers = self._admin.list_workers(request.model, parse_selector(request.selector))
        return pb.ListWorkersResponse(
            workers=[_worker_status(w) for w in workers],
            replica_id=self._replica_id,
            leader=self._is_leader(),
        )

    async def WatchEndpoints(
        self, request: pb.WatchEndpointsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEndpointsResponse]:
        selector = parse_selector(request.selector)  # INVALID_ARGUMENT before subscribing
        # no set before etcd was read: an empty one would make clients drop every replica
        await self._synced.wait()
        subscription = self._hub.subscribe(request.model, selector)
        try:
            while True:
                # one message per set for every stream of the same model and selector
                yield await subscription.next_encoded(_endpoint_set)
        finally:
            self._hub.unsubscribe(subscription)

    def _require_synced(self) -> None:
        if not self._synced.is_set():
            raise _unsynced()

    async def DrainWorker(
        self, request: pb.DrainWorkerRequest, context: Context
    ) -> pb.DrainWorkerResponse:
        self._require_synced()
        await self._admin.drain(request.worker_id)
        return pb.DrainWorkerResponse()

    async def UndrainWorker(
        self, request: pb.UndrainWorkerRequest, context: Context
    ) -> pb.UndrainWorkerResponse:
        self._require_synced()
        await self._admin.undrain(request.worker_id)
        return pb.UndrainWorkerResponse()

    async def RegisterModel(
        self, request: pb.RegisterModelRequest, context: Context
    ) -> pb.RegisterModelResponse:
        self._require_synced()
        record = await self._registrations.register(
            request.model, request.owner, http_api_of(request.http_api)
        )
        return pb.RegisterModelResponse(registration=registration_message(ApiStatus(record, False)))

    async def ListRegistrations(
        self, request: pb.ListRegistrationsRequest, context: Context
    ) -> pb.ListRegistrationsResponse:
        self._require_synced()
        statuses = self._registrations.list(request.model)
        return pb.ListRegistrationsResponse(
            registrations=[registration_message(s) for s in statuses]
        )

    async def SetRegistrationOnline(
        self, request: pb.SetRegistrationOnlineRequest, context: Context
    ) -> pb.SetRegistrationOnlineResponse:
        self._require_synced()
        record = await self._registrations.set_online(request.registration_id, request.online)
        status = ApiStatus(record, self._registrations.healthy(record.registration_id))
        return pb.SetRegistrationOnlineResponse(registration=registration_message(status))

    async def RemoveRegistration(
        self, request: pb.RemoveRegistrationRequest, context: Context
    ) -> pb.RemoveRegistrationResponse:
        self._require_synced()
        await self._registrations.remove(request.registration_id)
        return pb.RemoveRegistrationResponse()


def _unsynced() -> Unavailable:
    return Unavailable(
        "this control-plane replica has not read etcd yet; retry, or ask another",
        reason=Reason.NOT_SYNCED,
    )


def _load(load: Load) -> pb.Load:
    return pb.Load(
        in_flight=load.in_flight,
        queue_depth=load.queue_depth,
        latency=duration(load.latency_ms / 1000.0),
    )


def _worker_status(worker: WorkerView) -> pb.WorkerStatus:
    info = worker.info
    status = pb.WorkerStatus(
        worker_id=info.worker_id,
        address=info.address,
        models=[
            pb.WorkerModel(
                model=m.name, task=m.task, version=m.version, serving=worker.serving(m.name)
            )
            for m in info.models
        ],
        tags=info.tags,
        reachable=worker.reachable,
        draining=worker.desired.drain,
        load=_load(worker.load),
    )
    if info.started_at:  # a worker that did not say when has no start time, not 1970
        status.start_time.CopyFrom(timestamp(info.started_at))
    return status


def _endpoint(endpoint: Endpoint) -> pb.Endpoint:
    return pb.Endpoint(
        worker_id=endpoint.worker_id,
        address=endpoint.address,
        tags=endpoint.tags,
        load=_load(endpoint.load),
        http_api=http_api_message(endpoint.http_api, redact=False) if endpoint.http_api else None,
        capacity=endpoint.capacity,
    )


def _endpoint_set(endpoint_set: EndpointSet) -> pb.WatchEndpointsResponse:
    return pb.WatchEndpointsResponse(
        model=endpoint_set.model,
        version=endpoint_set.version,
        endpoints=[_endpoint(e) for e in endpoint_set.endpoints],
    )
