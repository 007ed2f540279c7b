"""examples/custom-worker.yaml served by a real worker process: a torch module with batching,
a streaming custom model, and a plain function."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelyard.client import AsyncClient, Client
from modelyard.errors import InvalidArgument
from tests.integration.conftest import worker_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
