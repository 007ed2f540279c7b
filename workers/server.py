"""The worker process: a grpc.aio server with Predict, WorkerLoad, health and reflection.

Start-up: the server listens first (health NOT_SERVING), then models load concurrently and
each one's health turns SERVING as it becomes ready. With etcd configured, the worker then
reads its desired state and registers itself under a lease (see `workers.registration`);
health "modelyard.v1.Registration" says whether it is registered. A worker that has nothing
to serve (every model failed), or any failed model in strict mode, never reports ready:
start fails, and the process exits 2 when the config is to blame, 1 otherwise.

Drain (an admin's desired state in etcd): health NOT_SERVING and new calls UNAVAILABLE
while in-flight calls finish, but the process keeps running and undraining reopens it.

Shutdown (SIGTERM/SIGINT, or `stop`): the lease is revoked first, so the control plane
withdraws the worker before it drains; then everything goes NOT_SERVING and new calls get
UNAVAILABLE, in-flight calls get up to `grace_seconds` to finish, then the server stops and
the process exits 0. `run` is the shared `modelyard_server.runner.run_until_signalled`; a
start that fails (or is interrupted by a signal) is undone by `abort`.

Telemetry: calls traced (a Predict's queue wait and inference as its children, each batch a
span linked to the requests it served), /metrics (`workers.metrics`) when `metrics_port` is
set; the spans still queued are flushed once the server has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.v1 import load_pb2, load_pb2_grpc, predict_pb2, predict_pb2_grpc
from modelyard_server.auth import AuthInterceptor
from modelyard_server.decoding import decoding
from modelyard_server.etcd import EtcdClient, Keys
from modelyard_server.portfile import write_port_file
from modelyard_server.runner import run_until_signalled
from modelyard_server.service_telemetry import ServiceTelemetry
from modelyard_server.tls import add_port
from modelyard_server.workerinfo import DesiredWorker, WorkerInfo
from workers.desired_state import DesiredState
from workers.devices import worker_tags
from workers.load_servicer import WorkerLoadServicer
from workers.metrics import WorkerMetrics
from workers.registration import Registration, describe_worker
from workers.registry import ModelEntry, ModelRegistry, ModelState
from workers.service import WorkerService
from workers.servicer import PredictServicer
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

PREDICT_SERVICE = predict_pb2.DESCRIPTOR.services_by_name["Predict"].full_name
LOAD_SERVICE = load_pb2.DESCRIPTOR.services_by_name["WorkerLoad"].full_name
#: A health name with no service behind it: SERVING while this worker is registered in etcd.
REGISTRATION_HEALTH = "modelyard.v1.Registration"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StartupError(Exception):
    """The worker cannot serve as configured: strict mode and a model failed, or no model
    loaded. `exit_code` is the process's: 2 when the config is to blame (a model's source,
    class, task or options), 1 otherwise (an unreachable hub, a model's own load error)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Worker:
    def __init__(self, settings: WorkerSettings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._clock = clock
        self.telemetry = ServiceTelemetry(
            settings.telemetry,
            service_name="modelyard-worker",
            host=settings.host,
            metrics_port=settings.metrics_port,
        )
        self.metrics = WorkerMetrics(self.telemetry.registry)
        self.health = health.aio.HealthServicer()
        self.registry = ModelRegistry(
            settings.models,
            self.metrics,
            self._on_model_change,
            clock=clock,
            tracer=self.telemetry.tracer,
        )
        for entry in self.registry.entries():
            self.metrics.set_model_state(entry.name, entry.state.value)
            self.metrics.watch_queue_depth(entry.name, _queue_depth_of(entry))
        tags = worker_tags((m.device for m in settings.models), settings.tags)
        self.service = WorkerService(self.registry, self.metrics, tags, clock=clock)
        self.server = grpc.aio.server(
            interceptors=[
                *self.telemetry.server_interceptors(
                    namespace="modelyard_worker", models=self.registry.names
                ),
                AuthInterceptor(settings.auth),  # innermost: its refusals are counted, traced
            ],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        request_metrics = self.telemetry.request_metrics
        self.predict_servicer = PredictServicer(
            self.service,
            max_message_bytes=settings.max_message_bytes,
            record=request_metrics.record if request_metrics is not None else None,
        )
        self.port = 0
        self.worker_id = settings.worker_id  # completed with the port once it is bound
        self.registration: Registration | None = None
        self.desired_state: DesiredState | None = None
        self._etcd: EtcdClient | None = None
        self._loaded = False  # every model has loaded or failed
        #: Why `start` refused to serve, once it has (its exit_code is the process's).
        self.refusal: StartupError | None = None
        self._stopping = False
        self._stopped: asyncio.Task[None] | None = None
        self._started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """The Prometheus /metrics port while it serves (the bound one when configured 0)."""
        return self.telemetry.metrics_port

    @property
    def advertise_address(self) -> str:
        """What others dial: the configured address, else host:port (the host name when
        listening on every interface, since 0.0.0.0 cannot be dialled from elsewhere)."""
        if self.settings.advertise_address:
            return self.settings.advertise_address
        host = self.settings.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = socket.gethostname()
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Listens, then loads every model; returns when all have loaded or failed.

        With etcd, it then reads its desired state and starts registering (in the
        background: a worker that cannot reach etcd serves anyway and keeps trying).
        """
        self._loop = asyncio.get_running_loop()
        self.port = add_port(
            self.server, f"{self.settings.host}:{self.settings.port}", self.settings.tls
        )
        if self.port == 0:
            raise StartupError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        self.worker_id = self.settings.worker_id or f"{socket.gethostname()}-{self.port}"
        predict_pb2_grpc.add_PredictServicer_to_server(self.predict_servicer, decoding(self.server))
        load_pb2_grpc.add_WorkerLoadServicer_to_server(
            WorkerLoadServicer(self.service, self.worker_id), decoding(self.server)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (PREDICT_SERVICE, LOAD_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.server,
        )
        for name in ("", PREDICT_SERVICE, *self.registry.names):
            await self.health.set(name, NOT_SERVING)
        if self.settings.etcd is not None:
            await self.health.set(REGISTRATION_HEALTH, NOT_SERVING)
        await self.server.start()
        self.telemetry.start_metrics()
        log.info(
            "worker listening on %s; loading %d model(s)", self.address, len(self.settings.models)
        )
        await self.registry.load_all()
        self.refusal = self._refusal()
        if self.refusal is not None:
            raise self.refusal
        self._loaded = True
        await self._join()
        await self._publish_health()
        if self.registration is not None:
            # after the models loaded, so the control plane sees the real model list
            self.registration.start()
        write_port_file(self.settings.port_file, self.port)
        log.info("worker %s ready on %s", self.worker_id, self.address)

    def _refusal(self) -> StartupError | None:
        """Why the worker must not serve what loaded: strict mode and a model failed, or no
        model loaded. A worker with nothing to serve exits rather than listen NOT_SERVING
        for good: models load only at start, so an orchestrator's restart is the retry, and
        a terminal shows why at once. Each failure was logged on its own line already."""
        entries = self.registry.entries()
        if not entries:
            return StartupError("nothing to serve: the settings list no models", 2)
        failed = [e for e in entries if e.state is ModelState.FAILED]
        if not failed or (len(failed) < len(entries) and not self.settings.strict):
            return None
        why = "strict mode" if len(failed) < len(entries) else "nothing to serve"
        reasons = "; ".join(f"{e.name}: {e.reason}" for e in failed)
        return StartupError(
            f"{why}: {len(failed)} of {len(entries)} model(s) failed to load: {reasons}",
            2 if any(e.config_mistake for e in failed) else 1,
        )

    async def _join(self) -> None:
        """Connects to etcd and reads this worker's desired state (a worker drained before
        it restarted comes up drained)."""
        etcd = self.settings.etcd
        if etcd is None:
            return
        keys = Keys(etcd.prefix)
        self._etcd = EtcdClient(etcd)
        self.registration = Registration(
            self._etcd,
            keys.worker(self.worker_id),
            self._describe,
            ttl=self.settings.lease_ttl,
            on_change=self._on_registration,
            clock=self._clock,
        )
        self.desired_state = DesiredState(
            self._etcd,
            keys.desired_worker(self.worker_id),
            self._on_desired,
            call_timeout=min(etcd.timeout, 2.0),
            clock=self._clock,
        )
        await self.desired_state.start(wait=min(etcd.timeout, 2.0))

    def _describe(self) -> WorkerInfo:
        return describe_worker(
            self.worker_id,
            self.advertise_address,
            self.registry,
            self.service.tags,
            self._started_at,
        )

    async def _on_registration(self, registered: bool) -> None:
        await self.health.set(REGISTRATION_HEALTH, SERVING if registered else NOT_SERVING)

    async def _on_desired(self, desired: DesiredWorker) -> None:
        if self._stopping:
            return  # shutdown owns the worker's state now
        if desired.drain != self.service.draining:
            log.warning(
                "%s (desired state in etcd)",
                "draining: refusing new calls" if desired.drain else "undrained: serving again",
            )
        self.service.set_draining(desired.drain)
        await self._publish_health()

    async def _publish_health(self) -> None:
        """Sets every health status from the current state (level-triggered: it does not
        matter what changed). After `enter_graceful_shutdown`, the servicer ignores it."""
        open_ = not self.service.draining
        worker = SERVING if open_ and self._loaded else NOT_SERVING
        await self.health.set("", worker)
        await self.health.set(PREDICT_SERVICE, worker)
        for entry in self.registry.entries():
            ready = open_ and entry.state is ModelState.READY
            await self.health.set(entry.name, SERVING if ready else NOT_SERVING)

    def _on_model_change(self, entry: ModelEntry) -> None:
        self.metrics.set_model_state(entry.name, entry.state.value)
        assert self._loop is not None
        task = self._loop.create_task(self._publish_health())
        self._background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._background.discard)
        if self.registration is not None:
            self.registration.update()

    async def stop(self) -> None:
        """Graceful shutdown (see the module's docstring).

        Calling it again (a second SIGTERM, a test's clean-up) waits for the first.
        """
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        self._stopping = True
        if self.desired_state is not None:
            await self.desired_state.close()  # an undrain must not reopen a stopping worker
        if self.registration is not None:
            await self.registration.close(revoke=True)
        await self.health.enter_graceful_shutdown()
        log.info("draining %d call(s) in flight", self.service.in_flight)
        # also ends the load feeds, which would otherwise hold up the server's stop
        if not await self.service.drain(self.settings.grace_seconds):
            log.warning("grace period over with %d call(s) in flight", self.service.in_flight)
        # idle PredictMany streams would hold the stop for its whole grace; a call a client
        # sent on one meanwhile is unanswered, and so retried elsewhere
        self.predict_servicer.many.close()
        await self.server.stop(grace=1.0)
        await self._release()

    async def abort(self) -> None:
        """Undoes a start that failed or was interrupted: no grace, in-flight calls end now,
        the lease (if one was granted) is revoked."""
        self._stopping = True
        if self.desired_state is not None:
            await self.desired_state.close()
        if self.registration is not None:
            await self.registration.close(revoke=True)
        await self.server.stop(grace=None)
        await self._release()

    async def _release(self) -> None:
        """What outlives the server: model threads, the etcd connection, the /metrics port
        (a test process runs many workers; a restarted one may want the same port), and
        the spans not exported yet."""
        await self.registry.close()
        if self._etcd is not None:
            await self._etcd.close()
        await self.telemetry.close()


def _queue_depth_of(entry: ModelEntry) -> Callable[[], int]:
    return lambda: entry.runner.queue_depth


async def run(settings: WorkerSettings) -> int:
    """Runs a worker until SIGTERM or SIGINT; the process's exit code: 0 once stopped, the
    refusal's (2 for the config's mistake, else 1) when it would not serve what loaded."""
    worker = Worker(settings)
    code = await run_until_signalled(worker, "worker")
    return worker.refusal.exit_code if worker.refusal is not None else code
