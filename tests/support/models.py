"""Small custom models that need no weights: for tests, benchmarks and examples.

Each is a plain `modelyard.model.Model`; serve one with `class: tests.support.models:Echo`.
Options come from the worker config's `options:` mapping.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path

from modelyard.errors import InvalidArgument
from modelyard.model import LoadContext, Model, Outputs, Request
from modelyard.signature import Field


class Echo(Model):
    """Returns its inputs as outputs: the no-op model, to measure serving overhead."""

    task = "echo"
    blocking = False  # copying a dict: cheaper than the thread hop it saves

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [dict(request.inputs) for request in batch]


class SlowEcho(Model):
    """Echoes after `delay_ms` per batch, and reports how big its batch was.

    Options: `delay_ms` (float), `load_ms` (float, how long loading takes). It stands in
    for a model with a fixed cost per call, which is where batching pays: N requests in
    one call cost one delay instead of N.
    """

    task = "slow-echo"
    inputs = (Field("x", "any", "Anything; echoed back."),)
    outputs = (
        Field("x", "any", "The input."),
        Field("batch_size", "int", "How many requests shared this call."),
    )

    def load(self, context: LoadContext) -> None:
        self.delay = float(context.options.get("delay_ms", 10.0)) / 1000.0
        # a slow load, to watch a worker report the model as loading
        time.sleep(float(context.options.get("load_ms", 0.0)) / 1000.0)

    def predict(self, batch: list[Request]) -> list[Outputs]:
        time.sleep(self.delay)
        return [{"x": r.inputs["x"], "batch_size": len(batch)} for r in batch]


class Gate:
    """What a `Gated` model waits for: a file that does not exist until `open()` creates
    it, so a test can open it for a worker in its own process or in another one. Give a
    model its path: `"options": {"predict_gate": str(gate)}`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        self.path.touch()

    def __str__(self) -> str:
        return str(self.path)


class Gated(Model):
    """Echoes like SlowEcho, but loads and answers only once the test opens a `Gate`.

    Options: `load_gate` (a gate's path: loading waits for it), `predict_gate` (every
    batch waits for it), `delay_ms` (then each batch sleeps this long). A test that must
    look at a loading model, or at calls in flight, holds that moment for as long as it
    needs instead of guessing how long a delay lasts on a busy host. A gate still shut
    after `gate_timeout_s` (default 120) fails the load or the batch, so a test that fails
    before opening it cannot leave the model's thread blocked for good (the process could
    not exit).
    """

    task = "gated"
    inputs = (Field("x", "any", "Anything; echoed back."),)
    outputs = (
        Field("x", "any", "The input."),
        Field("batch_size", "int", "How many requests shared this call."),
    )

    def load(self, context: LoadContext) -> None:
        options = context.options
        self.timeout = float(options.get("gate_timeout_s", 120.0))
        self.predict_gate = Path(options["predict_gate"]) if "predict_gate" in options else None
        self.delay = float(options.get("delay_ms", 0.0)) / 1000.0
        if "load_gate" in options:
            self._wait(Path(options["load_gate"]))

    def predict(self, batch: list[Request]) -> list[Outputs]:
        if self.predict_gate is not None:
            self._wait(self.predict_gate)
        time.sleep(self.delay)
        return [{"x": r.inputs["x"], "batch_size": len(batch)} for r in batch]

    def _wait(self, gate: Path) -> None:
        give_up = time.monotonic() + self.timeout
        while not gate.exists():
            if time.monotonic() > give_up:
                raise TimeoutError(f"gate {gate} still shut after {self.timeout:g} s")
            time.sleep(0.005)


class Ticker(Model):
    """Streams `count` ticks, one every `interval_ms`, and stops as soon as it is told to.

    A stand-in for a long generation: cancellation tests watch that it really stops, and
    `streams_started` counts the streams that reached the model at all.
    """

    task = "ticker"
    streaming = True
    inputs = (Field("count", "int", "How many ticks to stream."),)
    outputs = (Field("ticks", "int", "How many ticks were produced."),)
    parameters = (Field("interval_ms", "float", "Pause between ticks."),)
    default_parameters = {"interval_ms": 10.0}
    streams_started = 0

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [{"ticks": r.inputs["count"]} for r in batch]

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        self.streams_started += 1  # on the model's one thread: no lock needed
        interval = float(request.parameters["interval_ms"]) / 1000.0
        produced = 0
        for i in range(int(request.inputs["count"])):
            if stop.wait(interval):
                break
            produced += 1
            yield {"tick": i}
        return {"ticks": produced}


class Picky(Model):
    """Fails on some inputs the way buggy or fragile models do, to show isolation.

    text "boom" raises a plain exception (a bug: INTERNAL); text "" is refused with
    INVALID_ARGUMENT from inside the model; anything else is upper-cased.
    """

    task = "picky"
    inputs = (Field("text", "string", "Any text but 'boom'."),)
    outputs = (Field("text", "string", "The text, upper-cased."),)

    def predict(self, batch: list[Request]) -> list[Outputs]:
        results: list[Outputs] = []
        for request in batch:
            text = request.inputs["text"]
            if text == "boom":
                raise RuntimeError("the model blew up on 'boom' (secret detail)")
            if not text:
                raise InvalidArgument("input 'text' must not be empty")
            results.append({"text": text.upper()})
        return results


class ImportedModules(Model):
    """Says which of the named modules its process has imported: what a worker pays for
    at start-up (torch and transformers cost seconds and hundreds of MB)."""

    task = "imported-modules"
    blocking = False
    inputs = (Field("names", "list", "Module names to look up.", element_kind="string"),)
    outputs = (Field("imported", "list", "Those of them the process has imported."),)

    def predict(self, batch: list[Request]) -> list[Outputs]:
        return [{"imported": [n for n in r.inputs["names"] if n in sys.modules]} for r in batch]


class BrokenLoad(Model):
    """Fails to load, like a model with missing or corrupt weights."""

    task = "broken"

    def load(self, context: LoadContext) -> None:
        raise FileNotFoundError("weights.bin not found (a stand-in for a broken checkpoint)")

    def predict(self, batch: list[Request]) -> list[Outputs]:
        raise AssertionError("never loaded")


class HelloChat(Model):
    """An llm/v1/chat model that always says hello (streamed: "hel", "lo"): the gateway's
    tests' model, with no weights."""

    task = "llm/v1/chat"
    streaming = True
    inputs = (Field("messages", "list", "The conversation.", element_kind="map"),)
    #: its name in responses, and its answer
    model_name = "hello"
    content = "hello"

    def predict(self, batch: list[Request]) -> list[Outputs]:
        message = {"role": "assistant", "content": self.content}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return [{"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                 "model": self.model_name, "choices": [choice]} for _ in batch]  # fmt: skip

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        for piece in ("hel", "lo"):
            yield self.chunk(piece)
        return self.predict([request])[0]

    def chunk(self, piece: str) -> Outputs:
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                "model": self.model_name, "choices": [choice]}  # fmt: skip


class EndlessChat(HelloChat):
    """Streams for a minute (a chunk every 10 ms) unless stopped, holding the model's one
    thread meanwhile: a call after it answered within 30 s shows the stream was stopped.
    Answered unary, it says hello."""

    model_name = "endless"

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        for _ in range(6_000):
            if stop.wait(0.01):
                break
            yield self.chunk(" more")
        return self.predict([request])[0]
