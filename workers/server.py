"""The worker process: a grpc.aio server with Predict, health and reflection.

Start-up: the server listens first (health NOT_SERVING), then models load concurrently and
each one's health turns SERVING as it becomes ready. Shutdown (SIGTERM/SIGINT, or `stop`):
everything goes NOT_SERVING and new calls get UNAVAILABLE, in-flight calls get up to
`grace_seconds` to finish, then the server stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from modelyard.grpc_errors import ErrorMappingInterceptor
from modelyard.v1 import predict_pb2, predict_pb2_grpc
from workers.config import WorkerSettings
from workers.devices import device_tags, resolve_device
from workers.metrics import WorkerMetrics
from workers.registry import ModelEntry, ModelRegistry, ModelState
from workers.service import WorkerService
from workers.servicer import PredictServicer

log = logging.getLogger(__name__)

PREDICT_SERVICE = predict_pb2.DESCRIPTOR.services_by_name["Predict"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StartupError(Exception):
    """The worker cannot serve as configured (e.g. strict mode and a model failed)."""


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.health = health.aio.HealthServicer()
        self.registry = ModelRegistry(settings.models, self.metrics, self._on_model_change)
        self.service = WorkerService(self.registry, self.metrics, self._tags())
        self.server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def _tags(self) -> dict[str, str]:
        devices = set()
        for model in self.settings.models:
            # a device that is missing fails its model at load, which says why;
            # the tags describe what exists
            with contextlib.suppress(RuntimeError):
                devices.add(resolve_device(model.device))
        return device_tags(devices or {"cpu"}, self.settings.tags)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Listens, then loads every model; returns when all have loaded or failed."""
        self._loop = asyncio.get_running_loop()
        predict_pb2_grpc.add_PredictServicer_to_server(PredictServicer(self.service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (PREDICT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise StartupError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        for name in ("", PREDICT_SERVICE, *self.registry.names):
            await self.health.set(name, NOT_SERVING)
        await self.server.start()
        if self.settings.metrics_port >= 0:
            start_http_server(self.settings.metrics_port, registry=self.metrics.registry)
        log.info(
            "worker listening on %s; loading %d model(s)", self.address, len(self.settings.models)
        )
        await self.registry.load_all()
        failed = [e for e in self.registry.entries() if e.state is ModelState.FAILED]
        if failed and self.settings.strict:
            reasons = "; ".join(f"{e.name}: {e.reason}" for e in failed)
            raise StartupError(f"strict mode: model(s) failed to load: {reasons}")
        await self.health.set("", SERVING)
        await self.health.set(PREDICT_SERVICE, SERVING)
        self._write_port_file()
        log.info("worker ready on %s", self.address)

    def _write_port_file(self) -> None:
        path = self.settings.port_file
        if path is None:
            return
        tmp = Path(f"{path}.tmp")
        tmp.write_text(str(self.port))
        os.replace(tmp, path)  # readers never see a half-written port

    def _on_model_change(self, entry: ModelEntry) -> None:
        status = SERVING if entry.state is ModelState.READY else NOT_SERVING
        assert self._loop is not None
        self._loop.create_task(self.health.set(entry.name, status))

    async def stop(self) -> bool:
        """Graceful shutdown; returns whether every in-flight call finished in time."""
        await self.health.enter_graceful_shutdown()
        drained = await self.service.drain(self.settings.grace_seconds)
        if not drained:
            log.warning("grace period over with %d call(s) in flight", self.service.in_flight)
        await self.server.stop(grace=1.0)
        await self.registry.close()
        return drained


async def run(settings: WorkerSettings) -> int:
    """Runs a worker until SIGTERM or SIGINT; the process's exit code."""
    worker = Worker(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    startup = asyncio.create_task(worker.start())
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({startup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if startup.done() and startup.exception() is not None:
        stop_wait.cancel()
        log.error("%s", startup.exception())
        await worker.server.stop(grace=None)
        await worker.registry.close()
        return 1
    await stopping.wait()
    log.info("shutting down: draining %d call(s) in flight", worker.service.in_flight)
    if not startup.done():
        startup.cancel()
    await worker.stop()
    log.info("worker stopped")
    return 0
