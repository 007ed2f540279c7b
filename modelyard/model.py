"""The model interface every served model implements, and the base class for custom models.

A worker serves anything that subclasses `Model`: the Hugging Face pipeline adapters in
`workers.hf`, and user code named by a class path in the worker config, e.g.

    class Doubler(Model):
        task = "double"
        inputs = (Field("x", "float"),)
        outputs = (Field("y", "float"),)

        def predict(self, batch: list[Request]) -> list[dict[str, Any]]:
            return [{"y": r.inputs["x"] * 2} for r in batch]

`predict` is batch-aware: the worker's dynamic batcher hands it up to `max_batch_size`
requests at once, and it returns one outputs dict per request, in order. It runs on the
model's own thread, never on the event loop. Models that stream override `predict_stream`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.signature import Field

Outputs = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Request:
    """One checked request: inputs fit the signature, parameters are defaults + overrides."""

    inputs: Mapping[str, Any]
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a model needs to load itself."""

    # A Hugging Face id or a local path, or "" for custom models that need no weights.
    source: str
    # A torch device string: "cpu", "cuda:0", "mps".
    device: str
    # Free-form options from the worker config's `options:` mapping.
    options: Mapping[str, Any] = field(default_factory=dict)


class Model:
    """Base of every served model. Subclasses set the class attributes and `predict`."""

    #: The task name reported by GetModelMetadata.
    task: str = "custom"
    #: The named inputs of one request. A model that declares none takes any inputs.
    inputs: Sequence[Field] = ()
    #: The named outputs of one result.
    outputs: Sequence[Field] = ()
    #: The parameters a request may set, and their defaults.
    parameters: Sequence[Field] = ()
    default_parameters: Mapping[str, Any] = {}
    #: Whether `predict_stream` yields partial results.
    streaming: bool = False
    #: A version string; when empty the worker derives one from the source's files.
    version: str = ""
    #: Whether `predict` may block (any real inference does). A model that only reshuffles
    #: its inputs can say False: with batching off it then runs on the event loop and
    #: skips the hop to its thread, which is most of the serving cost of a trivial call.
    blocking: bool = True

    def load(self, context: LoadContext) -> None:
        """Loads weights onto `context.device`. Runs once, on the model's thread."""

    def predict(self, batch: list[Request]) -> list[Outputs]:
        """Runs a batch; returns one outputs dict per request, in order.

        A request the model cannot serve may get a `ModelyardError` in its slot instead of
        outputs: that caller alone gets the error, and the rest of the batch is unaffected.
        Raising fails the whole batch, which the worker then retries request by request.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement predict")

    def predict_stream(
        self, request: Request, stop: threading.Event
    ) -> Generator[Outputs, None, Outputs]:
        """Yields partial outputs, then returns the final outputs.

        `stop` is set when the caller cancels or its deadline passes: stop working then.
        The default runs `predict` and yields nothing.
        """
        yield from ()  # no partial results: makes this a generator
        return self.predict([request])[0]

    def predict_stream_to(
        self, request: Request, stop: threading.Event, emit: Callable[[Outputs], None]
    ) -> Outputs:
        """`predict_stream` as the worker runs it: hands each partial result to `emit`, on
        the calling thread (the model's), and returns the final outputs.

        The default iterates `predict_stream`, checking `stop` before each step. A model
        whose library reports progress through a callback (a `transformers` streamer) can
        override this to emit from the callback, on the same thread, instead of handing
        every chunk to a generator through another thread. Once `stop` is set nobody reads
        what this returns.
        """
        return push_stream(self.predict_stream(request, stop), stop, emit)


def push_stream(
    stream: Generator[Outputs, None, Outputs],
    stop: threading.Event,
    emit: Callable[[Outputs], None],
) -> Outputs:
    """Runs a `predict_stream` generator to its end, or until `stop` is set (checked before
    each step, the first included), handing each chunk to `emit`; returns the final
    outputs ({} once stopped)."""
    try:
        while not stop.is_set():
            try:
                chunk = next(stream)
            except StopIteration as done:
                final: Outputs = done.value
                return final
            emit(chunk)
        return {}
    finally:
        stream.close()  # a no-op once the generator has finished
