"""The shape every task adapter has, and the batch plumbing they share.

An adapter owns one loaded `transformers` pipeline. It declares the task's signature
(inputs, outputs, parameters and their defaults), checks each request's content before any
model work, and runs groups of requests that can share one model call. `predict` groups a
batch, runs each group once, and puts results back in request order; a request that fails
its checks gets its error in its own result slot and the rest of the batch runs without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from modelyard.errors import InvalidArgument, ModelyardError
from modelyard.model import Outputs, Request, push_stream
from modelyard.signature import Field

# Tokenizers that set no limit report this huge sentinel as their model_max_length.
_NO_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Item:
    """One checked request. `params` holds every parameter, None only where the task's
    own default is None."""

    inputs: Mapping[str, Any]
    params: Mapping[str, Any]
    # What `check` computed and the model call can reuse (e.g. the prompt's token ids)
    prepared: dict[str, Any] = field(default_factory=dict)


class TaskAdapter:
    """Base of the per-task adapters. Subclasses set the class attributes."""

    task: ClassVar[str]
    #: the task name `transformers.pipeline` knows it by
    pipeline_task: ClassVar[str]
    inputs: ClassVar[tuple[Field, ...]] = (Field("text", "string", "The input text."),)
    outputs: ClassVar[tuple[Field, ...]]
    parameters: ClassVar[tuple[Field, ...]] = ()
    default_parameters: ClassVar[Mapping[str, Any]] = {}
    streaming: ClassVar[bool] = False

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.tokenizer: Any = pipe.tokenizer
        self.model: Any = pipe.model
        limit = max_input_tokens(pipe)
        if limit is not None and self.tokenizer.model_max_length > limit:
            # Pipelines truncate to the tokenizer's limit; a tokenizer saved without one
            # would let a long text past the position embeddings and crash the forward.
            self.tokenizer.model_max_length = limit

    # -- per request -------------------------------------------------------------------

    def prepare(self, request: Request) -> Item:
        """The task's content checks; InvalidArgument says what was expected.

        Kinds and names of inputs and parameters were checked once, where the worker
        admits the call (`WorkerService.prepare`); a `Request` arrives checked.
        """
        inputs = dict(request.inputs)
        params = dict(request.parameters)
        for name, default in self.default_parameters.items():
            # null means "not set": fall back to this task's default
            if params.get(name) is None:
                params[name] = default
        item = Item(inputs, params)
        self.check(item)
        return item

    def check(self, item: Item) -> None:
        """Task-specific content checks (a mask token present, a usable template...)."""

    def group_key(self, item: Item) -> Hashable:
        """Items with equal keys run in one model call. Default: equal parameters."""
        return freeze(item.params)

    # -- per group ---------------------------------------------------------------------

    def run_group(self, items: Sequence[Item]) -> list[Outputs]:
        raise NotImplementedError

    def predict(self, batch: Sequence[Request]) -> list[Outputs]:
        """One result per request, in order. A request that fails its checks gets its
        ModelyardError in its slot instead of outputs, and the others still run together.

        Raising for the whole batch would make the worker rerun every request alone
        (`workers.runner._predict_isolated`): one client's bad prompts would then cost
        everyone else their batching. A batch of one raises: there is nothing to isolate.
        """
        results: list[Outputs | ModelyardError | None] = [None] * len(batch)
        items: list[Item] = []
        positions: list[int] = []  # where each checked item's result goes
        for position, request in enumerate(batch):
            try:
                item = self.prepare(request)  # before any model work: a bad request is cheap
            except ModelyardError as error:
                if len(batch) == 1:
                    raise
                results[position] = error
                continue
            items.append(item)
            positions.append(position)
        for indices in group_indices(items, self.group_key):
            outputs = self.run_group([items[i] for i in indices])
            for i, output in zip(indices, outputs, strict=True):
                results[positions[i]] = output
        # Every slot is filled: by its error, or by exactly one group. `Model.predict` is
        # typed as outputs only; the worker's runner hands an exception slot to its caller.
        return cast(list[Outputs], results)

    def stream(self, request: Request, stop: threading.Event) -> Generator[Outputs, None, Outputs]:
        yield from ()  # a generator that yields nothing: non-streaming tasks answer once
        return self.predict([request])[0]

    def stream_to(
        self, request: Request, stop: threading.Event, emit: Callable[[Outputs], None]
    ) -> Outputs:
        """`stream`, chunks handed to `emit` on the calling thread (`Model.predict_stream_to`)."""
        return push_stream(self.stream(request, stop), stop, emit)


Emit = Callable[[Outputs], None]
_DONE = object()


class PushStreamingTask(TaskAdapter):
    """A streaming task that generates on the calling thread and hands each chunk to a
    callback: `push` is its one implementation. The worker's path (`stream_to`) is `push`
    itself; the generator form (`stream`) runs it on a thread of its own (`pulled`)."""

    streaming = True

    def push(self, request: Request, emit: Emit, *stops: threading.Event) -> Outputs:
        """Sends the chunks to `emit` and returns the final outputs; stops at the next
        token once any of `stops` is set."""
        raise NotImplementedError

    def stream(self, request: Request, stop: threading.Event) -> Generator[Outputs, None, Outputs]:
        return (yield from pulled(lambda emit, closed: self.push(request, emit, stop, closed)))

    def stream_to(self, request: Request, stop: threading.Event, emit: Emit) -> Outputs:
        return self.push(request, emit, stop)


def pulled(push: Callable[[Emit, threading.Event], Outputs]) -> Generator[Outputs, None, Outputs]:
    """The generator form of a stream that pushes its chunks, for callers that iterate
    (`Model.predict_stream`; the worker uses the push form). `push(emit, closed)` runs on
    a thread of its own; closing the generator sets `closed`, and `push` must then stop."""
    chunks: queue.SimpleQueue[object] = queue.SimpleQueue()
    closed = threading.Event()
    outcome: list[Outputs] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(push(chunks.put, closed))
        except BaseException as error:  # re-raised on the caller's thread below
            failure.append(error)
        finally:
            chunks.put(_DONE)  # the reader must never wait for a generation that died

    thread = threading.Thread(target=run, name="modelyard-generate", daemon=True)
    thread.start()
    try:
        while (chunk := chunks.get()) is not _DONE:
            yield chunk  # type: ignore[misc]  # only push's chunks and _DONE are queued
    finally:
        closed.set()
        thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def group_indices(items: Sequence[Item], key: Callable[[Item], Hashable]) -> list[list[int]]:
    """Indices of `items` grouped by key, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return list(groups.values())


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for a parameter value; maps compare regardless of key order."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value  # type: ignore[no-any-return]  # str/int/float/bool/None are hashable


def max_input_tokens(pipe: Any) -> int | None:
    """The most tokens one model input may hold, when the tokenizer or config says."""
    limits = []
    tokenizer_limit = getattr(pipe.tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_LIMIT:
        limits.append(tokenizer_limit)
    positions = getattr(pipe.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else None


#: Characters per token assumed for the first cut of a long text (`leading_text`); a text
#: that needs more (long words, runs of spaces) gets a cut 4x wider, at most 3 times.
_CHARS_PER_TOKEN = 8
_WIDENINGS = 3


def leading_text(tokenizer: Any, text: str, max_tokens: int | None) -> str:
    """As much of the start of `text` as `max_tokens` tokens can hold, and a little more:
    what a truncating tokenizer keeps anyway, found without tokenising the whole text.

    Tokenising 15 MB only to keep its first 512 tokens took 40 s and gigabytes the
    allocator kept. The cut is at a space where there is one, so the last word kept is
    whole and its tokens are those the whole text would give. A text that holds fewer
    tokens than that in its first `max_tokens * 512` characters (one huge word, pages of
    spaces) is cut there all the same: the time it may cost stays bounded.
    """
    if max_tokens is None:
        return text
    window = max_tokens * _CHARS_PER_TOKEN
    for _ in range(_WIDENINGS):
        if window >= len(text):
            return text
        cut = _cut_at_space(text, window)
        if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) > max_tokens:
            return cut
        window *= 4
    return text if window >= len(text) else _cut_at_space(text, window)


def _cut_at_space(text: str, length: int) -> str:
    """The first `length` characters of `text`, less a last word that was cut."""
    cut = text[:length]
    space = cut.rfind(" ", length // 2)
    return cut[:space] if space > 0 else cut


def require_positive(params: Mapping[str, Any], *names: str) -> None:
    for name in names:
        value = params.get(name)
        if value is not None and value <= 0:
            raise InvalidArgument(f"parameter '{name}' must be greater than 0, got {value!r}")
