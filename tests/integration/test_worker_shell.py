"""The worker from the shell: grpcurl through reflection, and the `modelyard` command line,
exactly as the README shows them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")
MODELYARD = str(BIN / "modelyard")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def grpcurl_json(
    address: str, method: str, body: Mapping[str, Any] | list[dict[str, Any]]
) -> list[dict[str, object]]:
    """`body` is the request, or the messages a client stream sends."""
    data = " ".join(json.dumps(b) for b in body) if isinstance(body, list) else json.dumps(body)
    done = run(GRPCURL, "-plaintext", "-d", data, address, method)
    assert done.returncode == 0, done.stderr
    decoder, text, messages = json.JSONDecoder(), done.stdout.strip(), []
    while text:  # grpcurl prints one JSON document per streamed message
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].strip()
    return messages


def test_grpcurl_lists_the_services(hf_worker: str) -> None:
    services = run(GRPCURL, "-plaintext", hf_worker, "list").stdout.split()
    assert services == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "modelyard.v1.Predict",
        "modelyard.v1.WorkerLoad",
    ]


def test_grpcurl_describes_the_api(hf_worker: str) -> None:
    described = run(GRPCURL, "-plaintext", hf_worker, "describe", "modelyard.v1.Predict").stdout
    assert "rpc PredictStream ( .modelyard.v1.PredictStreamRequest ) returns " in described
    value = run(GRPCURL, "-plaintext", hf_worker, "describe", "modelyard.v1.Value").stdout
    assert ".modelyard.v1.Tensor tensor_value = 9;" in value


def test_grpcurl_predict(hf_worker: str) -> None:
    body = {"model": "sentiment", "inputs": {"text": {"string_value": "I love it"}}}
    (reply,) = grpcurl_json(hf_worker, "modelyard.v1.Predict/Predict", body)
    outputs = reply["outputs"]
    assert isinstance(outputs, dict)
    assert outputs["label"]["string_value"] in {"NEGATIVE", "POSITIVE"}
    assert 0.0 <= outputs["score"]["float_value"] <= 1.0


def test_grpcurl_predict_stream(hf_worker: str) -> None:
    body = {"model": "generate", "inputs": {"text": {"string_value": "Once upon a time"}}}
    messages = grpcurl_json(hf_worker, "modelyard.v1.Predict/PredictStream", body)
    assert all("chunk" in m for m in messages[:-1]) and len(messages) >= 3
    assert "result" in messages[-1]


def test_grpcurl_predict_many(hf_worker: str) -> None:
    def call(id_: int, model: str, text: str) -> dict[str, Any]:
        inputs = {"text": {"string_value": text}}
        return {"id": str(id_), "call": {"model": model, "inputs": inputs}}

    calls = [call(1, "sentiment", "I love it"), call(2, "sentiment", "dull"), call(3, "nope", "")]
    answers = {
        m["id"]: m for m in grpcurl_json(hf_worker, "modelyard.v1.Predict/PredictMany", calls)
    }
    assert set(answers) == {"1", "2", "3"}  # in whatever order the calls finished
    for id_ in ("1", "2"):
        outputs = answers[id_]["response"]["outputs"]  # type: ignore[index]
        assert outputs["label"]["string_value"] in {"NEGATIVE", "POSITIVE"}
    error = answers["3"]["error"]
    assert isinstance(error, dict)
    assert error["code"] == 5 and "model 'nope' is not served here" in error["message"]


def test_grpcurl_shows_a_clear_error(hf_worker: str) -> None:
    body = {"model": "nope", "inputs": {}}
    done = run(
        GRPCURL, "-plaintext", "-d", json.dumps(body), hf_worker, "modelyard.v1.Predict/Predict"
    )
    assert done.returncode != 0
    assert "Code: NotFound" in done.stderr and "model 'nope' is not served here" in done.stderr


def test_grpcurl_health_check(hf_worker: str) -> None:
    (reply,) = grpcurl_json(hf_worker, "grpc.health.v1.Health/Check", {"service": "embed"})
    assert reply == {"status": "SERVING"}


def test_cli_models_predict_and_metadata(hf_worker: str) -> None:
    listed = run(MODELYARD, "models", "served", hf_worker)
    assert listed.returncode == 0 and "sentiment" in listed.stdout and "ready" in listed.stdout
    predicted = run(
        MODELYARD,
        "predict",
        hf_worker,
        "zero-shot",
        "-i",
        "text=The match ended",
        "-i",
        'candidate_labels=["sports","cooking"]',
    )
    assert predicted.returncode == 0, predicted.stderr
    assert sorted(json.loads(predicted.stdout)["labels"]) == ["cooking", "sports"]
    meta = run(MODELYARD, "metadata", hf_worker, "embed")
    assert json.loads(meta.stdout)["task"] == "sentence-embedding"


def test_cli_streams_generation(hf_worker: str) -> None:
    done = run(MODELYARD, "predict", hf_worker, "generate", "-i", "text=Hello", "--stream")
    assert done.returncode == 0, done.stderr
    assert '"text":' in done.stdout


def test_cli_reports_errors_without_a_traceback(hf_worker: str) -> None:
    done = run(MODELYARD, "predict", hf_worker, "sentiment", "-i", "text=1")  # JSON 1: an int
    assert done.returncode == 1
    assert "INVALID_ARGUMENT: input 'text' must be a string" in done.stderr.replace("\n", " ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("models:\n  - {name: a}\n", "set exactly one of 'source'"),
        ("models: [", "invalid worker config"),
    ],
)
def test_worker_refuses_a_bad_config_with_exit_2(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    done = run(MODELYARD, "worker", "--config", str(path), "--port", "0")
    assert done.returncode == 2
    assert message in done.stderr.replace("\n", " ")


def test_worker_describe_prints_models_and_device_tags(hf_worker_config: Path) -> None:
    done = run(MODELYARD, "worker", "--config", str(hf_worker_config), "--describe")
    assert done.returncode == 0, done.stderr
    for expected in ("zero-shot", "(inferred)", "device tags", "cpu_count", "host_memory", "ci"):
        assert expected in done.stdout
