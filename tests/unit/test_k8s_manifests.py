"""deploy/k8s: valid against the Kubernetes schemas (offline), and consistent with what the
services serve: probes on the ports the commands pass, asking for health names the servers
register, Services and PodDisruptionBudgets selecting real pods, worker configs that load.
(tests/e2e/test_containers.py asks each gRPC probe of a real server.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from composer.server import SERVICE_NAME as COMPOSER_SERVICE
from controlplane.server import SERVICE_NAME as CONTROLPLANE_SERVICE
from gateway.api_keys import OPEN_PATHS
from workers.server import PREDICT_SERVICE

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MODELYARD = str(Path(sys.executable).parent / "modelyard")
#: the grpc.health.v1 names each server sets (besides a worker's model names)
HEALTH_NAMES = {
    "controlplane": {"", CONTROLPLANE_SERVICE},
    "composer": {"", COMPOSER_SERVICE},
    "worker": {"", PREDICT_SERVICE},
}
#: servers probed over HTTP (the gateway serves no gRPC), and the route that needs no key
HTTP_SERVERS = {"gateway"}
HTTP_HEALTH = "/health"


def documents() -> list[dict[str, Any]]:
    return [
        document
        for manifest in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(manifest.read_text())
    ]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in kinds]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment", "StatefulSet")


def modelyard_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (w["metadata"]["name"], c)
        for w in workloads()
        for c in w["spec"]["template"]["spec"]["containers"]
        if c["command"][0] == "modelyard"
    ]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def container_ports(container: dict[str, Any]) -> set[int]:
    return {p["containerPort"] for p in container.get("ports", [])}


def ids(items: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in items]


@pytest.mark.parametrize(
    "document", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_each_manifest_validates_against_the_kubernetes_schemas(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_stack_has_what_the_readme_promises() -> None:
    replicas = {(w["kind"], w["metadata"]["name"]): w["spec"]["replicas"] for w in workloads()}
    assert replicas[("StatefulSet", "etcd")] == 3
    assert replicas[("Deployment", "controlplane")] == 2
    assert {("Deployment", "worker"), ("Deployment", "worker-gpu")} <= replicas.keys()
    services = {s["metadata"]["name"] for s in of_kind("Service")}
    assert services >= {"composer", "controlplane", "gateway"}
    gpu = next(w for w in workloads() if w["metadata"]["name"] == "worker-gpu")
    pod = gpu["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]


@pytest.mark.parametrize(
    ("workload", "container"), modelyard_containers(), ids=ids(modelyard_containers())
)
def test_probes_ask_the_port_the_command_serves_for_names_its_server_registers(
    workload: str, container: dict[str, Any]
) -> None:
    command = container["command"]
    port = int(flag(command, "--port"))
    assert flag(command, "--host") == "0.0.0.0"  # probes and peers come from outside the pod
    assert port in container_ports(container)
    if command[1] in HTTP_SERVERS:
        assert HTTP_HEALTH in OPEN_PATHS  # a kubelet sends no API key
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[kind]["httpGet"] == {"port": port, "path": HTTP_HEALTH}, kind
        return
    assert container.get("readinessProbe", {}).get("grpc"), "readiness is a gRPC health check"
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "grpc" in probe:
            assert probe["grpc"]["port"] == port, kind
            assert probe["grpc"].get("service", "") in HEALTH_NAMES[command[1]], kind
        else:
            assert probe["tcpSocket"]["port"] == port, kind


@pytest.mark.parametrize(
    ("workload", "container"), modelyard_containers(), ids=ids(modelyard_containers())
)
def test_the_metrics_port_is_declared_where_prometheus_looks(
    workload: str, container: dict[str, Any]
) -> None:
    service = container["command"][1].upper()
    metrics_port = int(env(container)[f"MODELYARD_{service}_METRICS_PORT"])
    assert metrics_port in container_ports(container)
    template = next(w for w in workloads() if w["metadata"]["name"] == workload)["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)


def test_addresses_in_commands_name_services_and_ports_that_exist() -> None:
    services = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind("Service")
    }
    for _, container in modelyard_containers():
        command = container["command"]
        for option in ("--etcd", "--controlplane", "--composer"):
            if option in command:
                host, _, port = flag(command, option).rpartition(":")
                assert int(port) in services[host], f"{option} {host}:{port}"
        if "MODELYARD_CONTROLPLANE_ADDRESS" in env(container):
            host, _, port = env(container)["MODELYARD_CONTROLPLANE_ADDRESS"].rpartition(":")
            assert int(port) in services[host]


def test_services_and_budgets_select_pods_and_ports_that_exist() -> None:
    pods = [
        (w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"])
        for w in workloads()
    ]

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [spec for labels, spec in pods if selector.items() <= labels.items()]

    for service in of_kind("Service"):
        specs = selected(service["spec"]["selector"])
        assert specs, service["metadata"]["name"]
        served = {p for spec in specs for c in spec["containers"] for p in container_ports(c)}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= served
    for budget in of_kind("PodDisruptionBudget"):
        assert selected(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_workers_drain_themselves_by_their_own_id_before_they_stop() -> None:
    for workload, container in modelyard_containers():
        if container["command"][1] != "worker":
            continue
        ids = {e["name"]: e for e in container["env"]}
        assert ids["MODELYARD_WORKER_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.name"
        )
        pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert 'modelyard drain "$MODELYARD_WORKER_WORKER_ID"' in pre_stop, workload
        assert env(container)["MODELYARD_WORKER_ADVERTISE_ADDRESS"] == "$(POD_IP):50051"


def test_the_etcd_members_name_each_other_as_the_statefulset_names_them() -> None:
    etcd = next(w for w in workloads() if w["metadata"]["name"] == "etcd")
    args = dict(a.split("=", 1) for a in etcd["spec"]["template"]["spec"]["containers"][0]["args"])
    service = etcd["spec"]["serviceName"]
    members = [f"etcd-{i}" for i in range(etcd["spec"]["replicas"])]
    assert args["--initial-cluster"] == ",".join(f"{m}=http://{m}.{service}:2380" for m in members)
    assert args["--initial-advertise-peer-urls"] == f"http://$(POD_NAME).{service}:2380"
    assert etcd["spec"]["podManagementPolicy"] == "Parallel"  # members wait for each other
    image = etcd["spec"]["template"]["spec"]["containers"][0]["image"]
    major, minor, patch = (int(n) for n in image.rpartition(":v")[2].split("."))
    assert (major, minor) == (3, 5) and patch >= 3  # etcd-io/etcd#13766


@pytest.mark.parametrize(
    "config_map", of_kind("ConfigMap"), ids=lambda c: str(c["metadata"]["name"])
)
def test_worker_configs_load(tmp_path: Path, config_map: dict[str, Any]) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(config_map["data"]["worker.yaml"])
    done = subprocess.run(
        [MODELYARD, "worker", "--config", str(config), "--describe"],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
