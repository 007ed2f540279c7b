"""The control-plane process: informers over etcd, the reconcile loop, leader election,
health probing (leader only), load feeds, and the ControlPlane gRPC service. Registered
third-party APIs have informers, a reconcile loop and health checks of their own, and join
their model's endpoint sets beside its workers.

Everything it knows is rebuilt from etcd and live probes at start, so a restarted replica
converges by itself and its subscribers re-sync when they reconnect.

Telemetry: its calls traced (and its probe and load-feed channels: health probes make no
spans), /metrics with `controlplane.metrics` when `metrics_port` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controlplane.admin import Admin
from controlplane.api_prober import ApiProberPool
from controlplane.api_reconciler import ApiReconciler
from controlplane.api_view import ApiView, merged
from controlplane.election import LeaderElection
from controlplane.health_recorder import HealthRecorder
from controlplane.hub import EndpointHub
from controlplane.load import LoadFeedPool
from controlplane.metrics import ControlPlaneMetrics
from controlplane.prober import ProberPool
from controlplane.reconciler import Reconciler
from controlplane.registrations import RegistrationAdmin
from controlplane.servicer import ControlPlaneServicer
from controlplane.settings import ControlPlaneSettings
from controlplane.view import ClusterView
from controlplane.workqueue import WorkQueue, run_controller
from modelyard.v1 import controlplane_pb2, controlplane_pb2_grpc
from modelyard_server.aio import cancel_and_wait
from modelyard_server.auth import AuthInterceptor
from modelyard_server.decoding import decoding
from modelyard_server.etcd import EtcdClient, Keys
from modelyard_server.http_api.record import RegistrationRecord
from modelyard_server.informer import Informer
from modelyard_server.portfile import write_port_file
from modelyard_server.runner import run_until_signalled
from modelyard_server.service_telemetry import ServiceTelemetry
from modelyard_server.tls import add_port, channel_credentials
from modelyard_server.workerinfo import DesiredWorker, WorkerHealth, WorkerInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME = controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ControlPlane:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self.settings = settings
        self.telemetry = ServiceTelemetry(
            settings.telemetry,
            service_name="modelyard-controlplane",
            host=settings.host,
            metrics_port=settings.metrics_port,
        )
        self.keys = Keys(settings.etcd.prefix)
        self.client = EtcdClient(settings.etcd)
        self.queue = WorkQueue()
        self.workers = self._informer("workers", self.keys.workers, WorkerInfo.from_json)
        self.desired = self._informer("desired", self.keys.desired_workers, DesiredWorker.from_json)
        self.health_records = self._informer("health", self.keys.health, WorkerHealth.from_json)
        # registered third-party APIs: their own queue, so their ids never meet workers'
        self.api_queue = WorkQueue()
        self.registrations = self._informer(
            "registrations",
            self.keys.registrations,
            RegistrationRecord.from_json,
            queue=self.api_queue,
        )
        self.api_health = self._informer(
            "registration-health",
            self.keys.registration_health,
            WorkerHealth.from_json,
            queue=self.api_queue,
        )
        channels = self.telemetry.client_interceptors()
        to_workers = channel_credentials(settings.tls)
        self.loads = LoadFeedPool(
            settings.load_interval_ms, interceptors=channels, credentials=to_workers
        )
        self.view = ClusterView(
            self.workers.cache, self.desired.cache, self.health_records.cache, self.loads.loads
        )
        self.apis = ApiView(self.registrations.cache, self.api_health.cache)
        self.hub = EndpointHub(
            lambda model, selector: merged(
                self.view.endpoints(model, selector), self.apis.endpoints(model, selector)
            )
        )
        self.metrics = ControlPlaneMetrics(
            self.telemetry.registry, self.view, lambda: self.hub.subscribers
        )
        self.election: LeaderElection | None = None
        self.health_recorder = HealthRecorder(
            view=self.view, store=self.client, keys=self.keys, is_leader=self.is_leader
        )
        self.probers = ProberPool(
            self.metrics.health_listener(self.health_recorder.record),
            interceptors=channels,
            credentials=to_workers,
        )
        self.api_health_recorder = HealthRecorder(
            view=self.apis,
            store=self.client,
            keys=self.keys,
            is_leader=self.is_leader,
            health_key=self.keys.health_of_registration,
        )
        checks = settings.http_api
        self.api_probers = ApiProberPool(
            self.api_health_recorder.record,
            allowed_networks=checks.allowed_networks,
            interval=checks.health_interval_s,
            timeout=checks.health_timeout_s,
        )
        self.api_reconciler = ApiReconciler(
            apis=self.apis,
            store=self.client,
            keys=self.keys,
            probers=self.api_probers,
            hub=self.hub,
            is_leader=self.is_leader,
        )
        self.reconciler = Reconciler(
            view=self.view,
            store=self.client,
            keys=self.keys,
            probers=self.probers,
            loads=self.loads,
            hub=self.hub,
            is_leader=self.is_leader,
        )
        self.server = grpc.aio.server(
            interceptors=[
                *self.telemetry.server_interceptors(
                    namespace="modelyard_controlplane",
                    models=_RegisteredModels(self.view, self.apis),
                ),
                AuthInterceptor(settings.auth),  # innermost: its refusals are counted, traced
            ]
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.replica_id = ""
        self.synced = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def _informer(
        self,
        name: str,
        prefix: str,
        decode: Callable[[bytes], T],
        *,
        queue: WorkQueue | None = None,
    ) -> Informer[T]:
        return Informer(
            self.client,
            prefix,
            decode,
            (self.queue if queue is None else queue).add,  # (an empty queue is falsy)
            on_restart=lambda: self.metrics.watch_restarted(name),
        )

    def is_leader(self) -> bool:
        return self.election is not None and self.election.is_leader

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        self.port = add_port(
            self.server, f"{self.settings.host}:{self.settings.port}", self.settings.tls
        )
        self.replica_id = self.settings.resolved_replica_id(self.port)
        self.election = LeaderElection(
            self.client,
            self.keys.election,
            self.replica_id,
            ttl=self.settings.election_ttl,
            on_change=self._on_leadership,
        )
        admin = Admin(self.view, self.client, self.keys)
        registrations = RegistrationAdmin(
            self.apis,
            self.client,
            self.keys,
            allowed_networks=self.settings.http_api.allowed_networks,
        )
        servicer = ControlPlaneServicer(
            admin,
            self.hub,
            self.replica_id,
            self.is_leader,
            self.synced,
            registrations=registrations,
        )
        controlplane_pb2_grpc.add_ControlPlaneServicer_to_server(servicer, decoding(self.server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        loop = asyncio.get_running_loop()
        for name, coroutine in (
            ("informer-workers", self.workers.run()),
            ("informer-desired", self.desired.run()),
            ("informer-health", self.health_records.run()),
            ("informer-registrations", self.registrations.run()),
            ("informer-registration-health", self.api_health.run()),
            (
                "controller",
                run_controller(self.queue, self.metrics.timed(self.reconciler.reconcile)),
            ),
            ("api-controller", run_controller(self.api_queue, self.api_reconciler.reconcile)),
            ("health-recorder", self.health_recorder.run()),
            ("api-health-recorder", self.api_health_recorder.run()),
            ("election", self.election.run()),
            ("refresh", self.hub.refresh_every(self.settings.refresh_seconds)),
            ("ready", self._serve_once_synced()),
        ):
            self._tasks.append(loop.create_task(coroutine, name=name))
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        await self.server.start()
        self.telemetry.start_metrics()
        log.info("control plane %s serving on %s", self.replica_id, self.address)

    async def _serve_once_synced(self) -> None:
        # Until every informer has listed etcd the caches are empty, and an endpoint set
        # computed from them would tell composers that no replica exists. So streams and
        # reads wait for this; health says NOT_SERVING until then.
        await asyncio.gather(
            self.workers.synced.wait(),
            self.desired.synced.wait(),
            self.health_records.synced.wait(),
            self.registrations.synced.wait(),
            self.api_health.synced.wait(),
        )
        self.synced.set()
        # What exists now (caches, probers' streams: ~230,000 objects with 1,000 workers)
        # lives as long as the process; leaving it to the cyclic collector cost 80-200 ms
        # full collections every 0.5-1 s under churn, the whole tail of change latency
        # (bench/README.md, finding 3). Frozen, it is never scanned again. (No collect
        # first: in a process holding torch that blocks the loop for a noticeable time.)
        gc.freeze()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, SERVING)
        # the port file says "ready" (its setting: "once serving"), as a worker's does once
        # its models loaded: a starter that reads it must not meet NOT_SYNCED refusals
        write_port_file(self.settings.port_file, self.port)
        log.info("control plane %s has read etcd and serves endpoint sets", self.replica_id)

    def _on_leadership(self, leader: bool) -> None:
        self.metrics.leadership(leader)
        # (the election logs the change and why) probers start or stop, and a new leader
        # clears the health records of departed workers
        for worker_id in self.workers.cache.keys() | self.health_records.cache.keys():
            self.queue.add(worker_id)
        for registration_id in self.registrations.cache.keys() | self.api_health.cache.keys():
            self.api_queue.add(registration_id)

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self._release(grace=1.0)

    async def abort(self) -> None:
        await self._release(grace=None)

    async def _release(self, *, grace: float | None) -> None:
        """Stops whatever `start` started, in the order that hands over cleanly: no more
        reconciles, then leadership (a follower takes over now, not after the TTL), then
        probes and feeds, then the server."""
        for task in self._tasks:
            await cancel_and_wait(task)  # a single cancel can be lost inside aetcd's watch
        self._tasks.clear()
        await self.queue.close()
        await self.api_queue.close()
        if self.election is not None:
            await self.election.resign()
        await self.probers.stop_all()
        await self.api_probers.stop_all()
        await self.loads.stop_all()
        await self.server.stop(grace)
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.telemetry.close()


class _RegisteredModels:
    """The models some registered worker or third-party API serves: the calls' metrics
    count those by name (a request's `model` is the client's choice; others count as one
    "<unknown>")."""

    def __init__(self, view: ClusterView, apis: ApiView) -> None:
        self._view = view
        self._apis = apis

    def __contains__(self, model: object) -> bool:
        return any(m.name == model for w in self._view.workers() for m in w.info.models) or any(
            s.record.model == model for s in self._apis.statuses()
        )


async def run(settings: ControlPlaneSettings) -> int:
    return await run_until_signalled(ControlPlane(settings), "control plane")
