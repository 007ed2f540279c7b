"""Runs one loaded model: its own inference thread, dynamic batching, and streaming.

Every model owns a single-thread executor, so inference never blocks the event loop,
different models run at the same time, and one model's torch thread setting stays its own.

Each request's queue wait and inference are spans under its call's, and each model call of a
batch a span linked to the requests it served (`workers.model_spans`).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.errors import ModelError
from modelyard.model import Model, Outputs, Request
from workers.batching import Batcher, Pending, queue_full, similar_lengths
from workers.metrics import WorkerMetrics
from workers.model_spans import ModelSpans, Served
from workers.settings import BatchingConfig

R = TypeVar("R")
_END = object()

# A batch is split where its inputs' text lengths (in characters) differ by more than 2x
# and by more than 64 characters (about 16 tokens): every row of a model call is padded to
# its longest input, while each extra group costs a whole model call (for generation, a
# whole decoding loop). Prompts of ordinary, similar lengths stay one call.
LENGTH_SPREAD = 2.0
LENGTH_SLACK = 64


def set_torch_threads(threads: int) -> None:
    """Sets torch's intra-op threads for the calling thread's work, if torch is in use.

    Never imports torch itself: a worker serving only plain-Python models would pay
    ~190 MB of RSS for it. The registry calls this again after a model loaded torch.
    """
    torch = sys.modules.get("torch")
    # Another model's thread may be importing torch right now (it takes seconds): a model
    # thread starting meanwhile finds it half-initialised, without set_num_threads yet.
    # Calling that failed the thread's initializer, and with it the model ("BrokenThreadPool").
    set_num_threads = getattr(torch, "set_num_threads", None)
    if set_num_threads is not None:
        set_num_threads(threads)


@dataclass(frozen=True, slots=True)
class _Queued:
    """A batched request, and the record of its way for its spans."""

    request: Request
    served: Served


class ModelRunner:
    def __init__(
        self,
        name: str,
        batching: BatchingConfig,
        *,
        threads: int,
        metrics: WorkerMetrics,
        clock: Clock = SYSTEM_CLOCK,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.name = name
        self.batching = batching
        self._metrics = metrics
        self._clock = clock
        self._spans = ModelSpans(tracer, name, clock)
        self._model: Model | None = None
        self._executor = ThreadPoolExecutor(
            1,
            thread_name_prefix=f"model-{name}",
            initializer=set_torch_threads,
            initargs=(threads,),
        )
        self._batcher: Batcher[_Queued] | None = None
        # Calls admitted and not finished when batching is off; bounded like the batch queue.
        self._unbatched = 0
        # Streams admitted and not finished. Each holds the model's thread for its whole
        # generation (or waits for it), so they count against the queue limit and as load.
        self._streams = 0

    async def run_in_thread(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def attach(self, model: Model) -> None:
        """Starts serving `model` (after it loaded on this runner's thread)."""
        self._model = model
        if self.batching.max_batch_size > 1:
            self._batcher = Batcher(
                self._run_batch,
                max_batch_size=self.batching.max_batch_size,
                max_wait=self.batching.max_wait_ms / 1000.0,
                max_queue_size=self.batching.max_queue_size,
                name=self.name,
                clock=self._clock,
            )
            self._batcher.start()

    @property
    def queue_depth(self) -> int:
        """Unary calls waiting (for a batch or the thread) plus open streams."""
        waiting = self._batcher.depth if self._batcher is not None else self._unbatched
        return waiting + self._streams

    async def predict(self, request: Request) -> Outputs:
        model = self._require_model()
        served = self._spans.arrived()
        try:
            if self._batcher is not None:
                future = self._batcher.submit(_Queued(request, served))
                return await future  # type: ignore[no-any-return]
            return await self._predict_unbatched(model, request, served)
        finally:
            self._spans.finished(served)

    async def _predict_unbatched(self, model: Model, request: Request, served: Served) -> Outputs:
        if self._unbatched >= self.batching.max_queue_size:
            raise queue_full(self.name, f"{self._unbatched} requests waiting")
        if not model.blocking:
            return self._predict_one(model, request, served)
        self._unbatched += 1
        try:
            return await self.run_in_thread(lambda: self._predict_one(model, request, served))
        finally:
            self._unbatched -= 1

    def _predict_one(self, model: Model, request: Request, served: Served) -> Outputs:
        self._spans.started(served)
        self._metrics.queue_wait.labels(self.name).observe(self._clock.now() - served.queued_at)
        self._metrics.batch_size.labels(self.name).observe(1)
        try:
            result: Outputs | BaseException = _checked(model.predict([request]), 1)[0]
        finally:
            self._spans.ended(served)
        if isinstance(result, BaseException):
            raise result  # a model may report a request's failure in its result slot
        return result

    async def _run_batch(self, batch: list[Pending[_Queued]]) -> None:
        model = self._require_model()
        now = self._clock.now()
        for pending in batch:
            self._metrics.queue_wait.labels(self.name).observe(now - pending.enqueued_at)
        # One model call per group of similar lengths, each group answered as soon as it is
        # done: a short prompt is neither padded to a long one nor kept waiting for it.
        for group in similar_lengths(
            batch, _pending_text_length, spread=LENGTH_SPREAD, slack=LENGTH_SLACK
        ):
            self._metrics.batch_size.labels(self.name).observe(len(group))
            with self._spans.batch([pending.item.served for pending in group]):
                results = await self.run_in_thread(
                    functools.partial(_predict_isolated, model, group)
                )
            for pending, result in zip(group, results, strict=True):
                if pending.future.done():  # the caller gave up meanwhile
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    async def predict_stream(self, request: Request) -> AsyncGenerator[tuple[bool, Outputs], None]:
        """Yields (False, partial outputs) for each chunk, then (True, final outputs).

        Closing the iterator early (the caller cancelled) sets the model's stop event, and
        drops the generation outright if it has not reached the model's thread yet.
        """
        model = self._require_model()
        depth = self.queue_depth
        if depth >= self.batching.max_queue_size:
            raise queue_full(self.name, f"{depth} requests waiting or streaming")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        served = self._spans.arrived()

        def produce() -> None:
            # One hop per chunk, from the model's thread to the loop: the model emits from
            # where it computes (a transformers streamer's callback, on this thread).
            def put(item: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            try:
                # `stop` is checked before any work: a caller who gave up while this
                # waited for the thread must not cost a model call.
                if stop.is_set():
                    return
                self._spans.started(served)
                try:
                    final = model.predict_stream_to(
                        request, stop, lambda chunk: put((False, chunk))
                    )
                finally:
                    self._spans.ended(served)
                if not stop.is_set():
                    put((True, final))
            except BaseException as exc:  # handed to the caller, who maps it to a status
                put(exc)
            finally:
                put(_END)

        self._streams += 1
        try:
            # The concurrent future, not an asyncio wrapper: only its `cancel` tells whether
            # the executor had started the work.
            job = self._executor.submit(produce)
            work = asyncio.wrap_future(job, loop=loop)
            try:
                while (item := await queue.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                if not job.cancel():
                    # Running (or done): it finishes promptly once stopped, and then the
                    # thread is free again. Cancelled instead, it never runs: waiting for
                    # it would mean waiting behind every generation queued before it.
                    await asyncio.shield(work)
        finally:
            self._streams -= 1
            self._spans.finished(served)

    def _require_model(self) -> Model:
        if self._model is None:
            raise RuntimeError(f"model '{self.name}' is not attached")
        return self._model

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _checked(results: list[Any], expected: int) -> list[Any]:
    """The model's results, one per request: outputs, or the exception that request raised."""
    if not isinstance(results, list) or len(results) != expected:
        count = len(results) if isinstance(results, list) else type(results).__name__
        raise ModelError(f"the model returned {count} results for {expected} requests")
    return results


def text_length(value: Any) -> int:
    """Characters of text in a value (strings inside lists and maps included): what the
    padded width of a text model's call grows with. Other values count nothing, so a
    batch of tensors or numbers stays one group."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(text_length(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(text_length(v) for v in value)
    return 0


def _pending_text_length(pending: Pending[_Queued]) -> int:
    return text_length(pending.item.request.inputs)


def _predict_isolated(model: Model, batch: list[Pending[_Queued]]) -> list[Any]:
    """Runs a batch; if it fails as a whole, runs each request alone so only the bad one fails.

    A model that checks each request itself (the Hugging Face adapters do) returns a bad
    request's exception in that request's slot and the others' outputs: nothing to rerun,
    each slot goes to its own caller. A model that raises for the whole batch instead (a
    content problem that only shows during inference, or a plain bug) costs one more call
    per request, so that its batch-mates still get their answers.
    """
    requests = [p.item.request for p in batch]
    try:
        return _checked(model.predict(requests), len(requests))
    except Exception as batch_error:
        if len(requests) == 1:
            return [batch_error]
        results: list[Any] = []
        for request in requests:
            try:
                results.append(_checked(model.predict([request]), 1)[0])
            except Exception as error:
                results.append(error)
        return results
