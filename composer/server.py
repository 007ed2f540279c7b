"""The composer process: graphs from etcd, endpoint sets from the control plane, runs over
streaming gRPC to the workers. Several replicas may run; they share graphs through etcd.
If the control plane or etcd goes away, runs go on over the last endpoint sets.

Telemetry (`composer.telemetry`): a span per run, node and routed attempt, the trace carried
on to the workers, and the run's trace id sent back to the caller (`composer.servicer`);
/metrics with the calls', runs' and nodes' latencies when `metrics_port` is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from composer.admission import Admission
from composer.admission_limit import CEILING, SizedLimit
from composer.service import ComposerService
from composer.servicer import ComposerServicer
from composer.settings import ComposerSettings
from composer.store import GraphStore
from composer.telemetry import ComposerTelemetry
from composer.warm_routes import warm_routes
from modelyard.routed_client import RoutedClient
from modelyard.v1 import composer_pb2, composer_pb2_grpc
from modelyard_server.aio import cancel_and_wait
from modelyard_server.auth import AuthInterceptor
from modelyard_server.decoding import decoding
from modelyard_server.etcd import EtcdClient, Keys
from modelyard_server.http_api.caller import HttpApiCaller
from modelyard_server.portfile import write_port_file
from modelyard_server.runner import run_until_signalled
from modelyard_server.service_telemetry import ServiceTelemetry
from modelyard_server.tls import add_port, channel_credentials

log = logging.getLogger(__name__)

#: Calls gRPC takes on beyond the most runs admission may let in (the fixed limit, or a sized
#: limit's CEILING): the refusals it is answering, and deploys, lists, health checks and
#: reflection. gRPC's own limit is only a backstop (its refusal carries no retry hint and
#: health checks would meet it too), so admission must answer first.
CALLS_BEYOND_RUNS = 1024

SERVICE_NAME = composer_pb2.DESCRIPTOR.services_by_name["Composer"].full_name


class Composer:
    def __init__(self, settings: ComposerSettings) -> None:
        self.settings = settings
        self.telemetry = ServiceTelemetry(
            settings.telemetry,
            service_name="modelyard-composer",
            host=settings.host,
            metrics_port=settings.metrics_port,
        )
        runs = ComposerTelemetry(self.telemetry.tracer, self.telemetry.registry)
        self.client = EtcdClient(settings.etcd)
        self.store = GraphStore(self.client, Keys(settings.etcd.prefix))
        self.outside_apis = HttpApiCaller(settings.http_api, tracer=self.telemetry.tracer)
        self.routed = RoutedClient(
            settings.controlplanes,
            policy=settings.policy,
            **settings.routing.client_options(self.telemetry.tracer),
            interceptors=self.telemetry.client_interceptors(),
            credentials=channel_credentials(settings.tls),
            token=settings.auth.outgoing_token(),
            attempts=runs.attempts,
            outside_apis=self.outside_apis,
        )
        fixed = settings.max_runs_in_flight  # None or 0: sized
        self.admission = Admission(
            fixed or SizedLimit(self.routed.endpoint_sets, factor=settings.admission_factor)
        )
        self.service = ComposerService(
            self.store,
            self.routed,
            default_timeout=settings.default_timeout,
            admission=self.admission,
            telemetry=runs,
        )
        self.server = grpc.aio.server(
            # its requests name graphs, not models: no model label
            interceptors=[
                *self.telemetry.server_interceptors(namespace="modelyard_composer", models=()),
                AuthInterceptor(settings.auth),  # innermost: its refusals are counted, traced
            ],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
            ],
            maximum_concurrent_rpcs=(fixed or CEILING) + CALLS_BEYOND_RUNS,
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._tasks: list[asyncio.Task[Any]] = []
        # Set once it serves runs: it read the graphs from etcd and warmed their routes (what
        # SERVING on its health service and its port file say), as ControlPlane.synced.
        # Before that a run is answered UNAVAILABLE, "not read the graphs from etcd yet".
        self.synced = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        composer_pb2_grpc.add_ComposerServicer_to_server(
            ComposerServicer(self.service), decoding(self.server)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = add_port(
            self.server, f"{self.settings.host}:{self.settings.port}", self.settings.tls
        )
        self._tasks.append(asyncio.create_task(self.store.informer.run(), name="graphs"))
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self.telemetry.start_metrics()
        self._tasks.append(asyncio.create_task(self._serve_once_synced(), name="ready"))
        log.info("composer serving on %s", self.address)

    async def _serve_once_synced(self) -> None:
        await self.store.informer.synced.wait()
        await warm_routes(self.routed, self.store.list())  # sizes admission before runs
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.synced.set()
        # the port file says "ready", as a worker's does: whoever reads it can Run at once
        write_port_file(self.settings.port_file, self.port)

    async def stop(self) -> None:
        """NOT_SERVING, then runs in flight get `grace_seconds` to finish, then the rest."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace=self.settings.grace_seconds)
        await self._release()

    async def abort(self) -> None:
        """After a failed or interrupted start: stops whatever it started, at once."""
        await self.server.stop(grace=None)
        await self._release()

    async def _release(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)  # a single cancel can be lost inside aetcd's watch
        self._tasks.clear()
        await self.routed.close()
        await self.outside_apis.aclose()
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.telemetry.close()


async def run(settings: ComposerSettings) -> int:
    return await run_until_signalled(Composer(settings), "composer")
