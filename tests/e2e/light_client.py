"""A client app with nothing but `pip install modelyard`: tests/e2e/test_light_install.py
runs this file with the python of such a venv, as `python light_client.py WORKER COMPOSER`.

It calls a worker (Predict, PredictStream) and a composer (DeployGraph from a dict, Run,
RunStream), tries to import what only the other layers install, and prints one JSON
report for the test to check. It imports nothing but the client core and the stdlib.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import modelyard
from modelyard.client import Client
from modelyard.composer_client import Chunk, ComposerClient, NodeFinished, NodeStarted, Result
from modelyard.errors import NotFound

SERVER_ONLY = ("torch", "transformers", "typer", "rich", "aetcd", "pydantic", "yaml")
TICKS = {  # ticker streams `n` ticks into echo, called on each tick as it arrives
    "name": "ticks",
    "inputs": {"n": "int"},
    "nodes": [
        {"name": "gen", "model": "ticker", "inputs": {"count": "inputs.n"}},
        {"name": "each", "model": "echo", "inputs": {"tick": "gen.tick"}, "stream": "chunk"},
    ],
    "outputs": {"ticks": "gen.ticks", "each": "each.results"},
}


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def described(event: Chunk | NodeStarted | NodeFinished | Result) -> list[Any]:
    if isinstance(event, Chunk):
        return ["chunk", event.node, event.outputs]
    if isinstance(event, NodeStarted):
        return ["started", event.node]
    if isinstance(event, NodeFinished):
        return ["finished", event.node, event.status]
    return ["result", event.outputs]


def main(worker_address: str, composer_address: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "modelyard": modelyard.__file__,
        "importable": [name for name in SERVER_ONLY if importable(name)],
    }
    with Client(worker_address, timeout=30) as worker:
        report["predict"] = worker.predict("echo", text="hi").outputs
        stream = worker.predict_stream("ticker", count=3)
        report["predict_stream"] = [[event.final, event.outputs] for event in stream]
        try:  # the error's details need grpcio-status, which the base install brings
            worker.predict("nope")
        except NotFound as error:
            report["unknown_model"] = [error.reason, list(error.resource or ())]
    with ComposerClient(composer_address, timeout=30) as composer:
        report["deploy"] = composer.deploy(TICKS)
        report["run"] = composer.run("ticks", n=3).outputs
        report["run_stream"] = [described(event) for event in composer.run_stream("ticks", n=3)]
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
