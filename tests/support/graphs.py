"""Graphs several test modules deploy."""

from __future__ import annotations

from typing import Any

#: Two Echo nodes in a row: x goes through both unchanged.
ECHO_CHAIN: dict[str, Any] = {
    "name": "chain",
    "inputs": {"x": "int"},
    "nodes": [
        {"name": "a", "model": "echo", "inputs": {"x": "inputs.x"}},
        {"name": "b", "model": "echo", "inputs": {"x": "a.x"}},
    ],
    "outputs": {"x": "b.x"},
}
