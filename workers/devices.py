"""Devices: resolving `device: auto` and describing the host as device tags.

Tags are what the control plane later matches selectors against (`device=cuda`,
`gpu_mem>=16GiB`), so their names are part of the API: device, cpu_count, host_memory,
gpu_name, gpu_memory, gpu_count, plus the user's tags from the worker config.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping

import psutil

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_string(device: str) -> None:
    if not _DEVICE.match(device):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")


def resolve_device(device: str) -> str:
    """Turns `auto` into the best present device, and checks that a named one exists.

    `cpu`, and `auto` on a host with no GPU driver, resolve without importing torch: a
    worker of plain-Python models then never loads it (about 250 MB and 1.5 s of start-up).
    """
    if device == "cpu" or (device == "auto" and not _may_have_accelerator()):
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device} requested but CUDA is not available here")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {device} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return f"cuda:{index}"
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device mps requested but MPS is not available here")
    return device


def _may_have_accelerator() -> bool:
    """Whether asking torch could find a GPU: an NVIDIA driver, Apple silicon, or torch
    already imported (then asking is free)."""
    return (
        "torch" in sys.modules
        or os.path.exists("/dev/nvidiactl")
        or (sys.platform == "darwin" and platform.machine() == "arm64")
    )


def worker_tags(requested: Iterable[str], user_tags: Mapping[str, str]) -> dict[str, str]:
    """The device tags of a worker whose models ask for the `requested` devices: what the
    worker registers and reports, and what `modelyard worker --describe` prints.

    A requested device that is missing is left out (its model fails at load, which says
    why): the tags describe what exists. A worker with no model present is a cpu worker.
    """
    devices = set()
    for device in requested:
        with contextlib.suppress(RuntimeError):
            devices.add(resolve_device(device))
    return _host_tags(devices or {"cpu"}, user_tags)


def _host_tags(devices: set[str], user_tags: Mapping[str, str]) -> dict[str, str]:
    """The strongest kind among `devices`, the host, its GPUs, and the user's tags."""
    tags = {
        "device": _strongest_kind(devices),
        "cpu_count": str(os.cpu_count() or 1),
        "host_memory": str(psutil.virtual_memory().total),
    }
    if any(d.startswith("cuda") for d in devices):
        import torch

        props = torch.cuda.get_device_properties(0)
        tags["gpu_name"] = props.name
        tags["gpu_memory"] = str(props.total_memory)
        tags["gpu_count"] = str(torch.cuda.device_count())
    tags.update(user_tags)  # the user's word wins: e.g. a zone, or a corrected gpu_name
    return tags


def _strongest_kind(devices: set[str]) -> str:
    kinds = {d.partition(":")[0] for d in devices}
    for kind in ("cuda", "mps"):
        if kind in kinds:
            return kind
    return "cpu"
