"""ModelRunner on its own: exception result slots, streams that stop before they start,
and the refusal of a full queue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import InvalidArgument, ResourceExhausted
from modelyard.model import LoadContext, Model, Outputs, Request
from modelyard.signature import resolve_parameters
from workers.hf import PipelineModel
from workers.metrics import WorkerMetrics
from workers.runner import ModelRunner
from workers.settings import BatchingConfig


@pytest.fixture
async def runners() -> AsyncIterator[list[ModelRunner]]:
    """Runners a test makes; closed afterwards."""
    made: list[ModelRunner] = []
    yield made
    for runner in made:
        await runner.close()


def make_runner(made: list[ModelRunner], model: Model, **batching: Any) -> ModelRunner:
    runner = ModelRunner("m", BatchingConfig(**batching), threads=1, metrics=WorkerMetrics())
    runner.attach(model)
    made.append(runner)
    return runner


class SlotErrors(Model):
    """Reports a bad request in its result slot, as the Hugging Face adapters do."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, batch: list[Request]) -> list[Outputs]:
        self.calls.append(len(batch))
        results: list[Any] = []
        for request in batch:
            x = request.inputs["x"]
            results.append(InvalidArgument("x must not be negative") if x < 0 else {"x": x})
        return results


async def test_an_error_in_a_result_slot_goes_to_its_caller_alone(
    runners: list[ModelRunner],
) -> None:
    model = SlotErrors()
    runner = make_runner(runners, model, max_batch_size=4, max_wait_ms=50)
    results = await asyncio.gather(
        *(runner.predict(Request({"x": x}, {})) for x in (1, -1, 2)), return_exceptions=True
    )
    assert results[0] == {"x": 1} and results[2] == {"x": 2}
    assert isinstance(results[1], InvalidArgument)
    assert model.calls == [3]  # delivered as is: no rerun of each request alone


async def test_an_error_in_the_slot_of_an_unbatched_call_is_raised(
    runners: list[ModelRunner],
) -> None:
    runner = make_runner(runners, SlotErrors())
    assert await runner.predict(Request({"x": 1}, {})) == {"x": 1}
    with pytest.raises(InvalidArgument, match="must not be negative"):
        await runner.predict(Request({"x": -1}, {}))


@pytest.fixture(scope="module")
def fill_mask(tiny_checkpoints: dict[str, Path]) -> PipelineModel:
    model = PipelineModel("fill-mask")
    model.load(LoadContext(source=str(tiny_checkpoints["tiny-bert-mlm"]), device="cpu"))
    return model


async def test_a_bad_fill_mask_text_does_not_unbatch_the_good_ones(
    runners: list[ModelRunner], fill_mask: PipelineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    predict = fill_mask.predict
    calls: list[int] = []

    def counted(batch: list[Request]) -> list[Outputs]:
        calls.append(len(batch))
        return predict(batch)

    monkeypatch.setattr(fill_mask, "predict", counted)
    runner = make_runner(runners, fill_mask, max_batch_size=4, max_wait_ms=100)
    texts = ["The cat sleeps on the [MASK].", "no mask here", "[MASK] is good."]
    parameters = resolve_parameters(fill_mask.parameters, fill_mask.default_parameters, {})
    results = await asyncio.gather(
        *(runner.predict(Request({"text": t}, parameters)) for t in texts),
        return_exceptions=True,
    )
    assert calls == [3]  # one model call for the batch, none to isolate the bad text
    assert isinstance(results[1], InvalidArgument)
    assert "must contain the mask token" in results[1].message
    for good in (results[0], results[2]):
        assert isinstance(good, dict) and good["tokens"]


class WaitsForStop(Model):
    """A stream whose generator is only handed over once the caller has given up.

    It stands for a caller cancelling between the model's thread picking the stream up and
    the first step of its generator: that first step must then never run.
    """

    streaming = True

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.steps = 0

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        # not a generator function itself: this part runs as soon as the producer starts
        self.entered.set()
        stop.wait(5)
        return self._steps()

    def _steps(self) -> Generator[Outputs, None, Outputs]:
        self.steps += 1  # the model call a cancelled request must not cost
        yield {"tick": 0}
        return {"ticks": 1}


async def test_a_stream_stopped_before_its_first_step_makes_no_model_call(
    runners: list[ModelRunner],
) -> None:
    model = WaitsForStop()
    runner = make_runner(runners, model)
    stream = runner.predict_stream(Request({}, {}))

    async def first_chunk() -> tuple[bool, Outputs]:
        return await anext(stream)

    first = asyncio.create_task(first_chunk())
    assert await asyncio.to_thread(model.entered.wait, 5)  # the producer runs on the thread
    assert runner.queue_depth == 1  # an open stream is load
    first.cancel()  # the caller gives up: the producer is past its start, cannot be dropped
    with pytest.raises(asyncio.CancelledError):
        await first
    assert model.steps == 0
    assert runner.queue_depth == 0


class Held(Model):
    """Holds every call on the model's thread until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, batch: list[Request]) -> list[Outputs]:
        self.entered.set()
        self.release.wait(30)
        return [{"x": 1} for _ in batch]

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        self.entered.set()
        self.release.wait(30)
        yield {"tick": 0}
        return {"ticks": 1}


async def test_a_full_queue_says_queue_full_with_batching_off_and_for_streams(
    runners: list[ModelRunner],
) -> None:
    model = Held()
    runner = make_runner(runners, model, max_batch_size=1, max_queue_size=1)
    held = asyncio.create_task(runner.predict(Request({}, {})))
    try:
        assert await asyncio.to_thread(model.entered.wait, 30)
        with pytest.raises(ResourceExhausted) as unary:
            await runner.predict(Request({}, {}))
        with pytest.raises(ResourceExhausted) as stream:
            await anext(runner.predict_stream(Request({}, {})))
    finally:
        model.release.set()
    assert await held == {"x": 1}
    for refused in (unary.value, stream.value):
        assert (refused.reason, refused.metadata) == ("QUEUE_FULL", {"model": "m"})
    assert "queue limit" in unary.value.message
