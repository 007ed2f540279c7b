"""modelyard.v1.Predict/PredictMany: many Predict calls as messages of one stream.

Why: on grpc.aio a unary call's set-up and teardown cost more than its messages. Measured on
this VM (client and server in two processes, 60-byte messages, c=1): a unary round trip
takes ~0.75 ms with ~0.31 ms of client and ~0.49 ms of server CPU; a message each way on an
open bidi stream ~0.34 ms with ~0.21 ms and ~0.21 ms. The composer calls workers far more
often than anyone, so it sends its untraced calls this way (`modelyard.multiplex`).

Each call is the same `PredictServicer.predict` a unary Predict runs, in a task of its own,
so calls run side by side (and batch) as unary ones do; answers go out in the order calls
finish. A call's errors are the ones the unary error edge would send, in its answer; it is
counted and timed by the same request metrics, under method PredictMany. Calls here get no
spans of their own: a client sends only calls it does not trace (a traced call takes unary
Predict, where the tracing interceptors record it), and the stream itself is not traced (a
span as long as the stream would say nothing).

A malformed message (no `call` nor `cancel`, a negative timeout, an id still in flight) is
answered INVALID_ARGUMENT, and a call past its timeout DEADLINE_EXCEEDED, so a client that
drives the stream by hand (grpcurl, another language) never waits for an answer that will
not come. The stream ends when the client is done writing and every call has been answered. A worker
shutting down refuses new calls (UNAVAILABLE, as unary Predict does), lets the ones in
flight finish (`WorkerService.drain`), then cancels its streams (`close`), so they do not
hold its server's stop for the whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from modelyard.clock import SYSTEM_CLOCK, Clock
from modelyard.multiplex import MAX_RECEIVE_KEY
from modelyard.v1 import predict_pb2 as pb
from modelyard_server.error_status import DETAILS_KEY
from modelyard_server.grpc_errors import status_of

Context = grpc.aio.ServicerContext[Any, Any]

METHOD = "/modelyard.v1.Predict/PredictMany"


class RecordCall(Protocol):
    def __call__(self, method: str, request: Any, code: grpc.StatusCode, started: float) -> None:
        """Counts and times one call (`MetricsInterceptor.record`)."""


class PredictMany:
    """Serves PredictMany streams with `predict` (a PredictRequest in, its PredictResponse
    out, raising what unary Predict would raise)."""

    def __init__(
        self,
        predict: Callable[[pb.PredictRequest], Awaitable[pb.PredictResponse]],
        *,
        max_send_bytes: int,
        record: RecordCall | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._predict = predict
        self._max_send_bytes = max_send_bytes
        self._record = record
        self._clock = clock
        self._streams: set[asyncio.Task[Any]] = set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def serve(self, context: Context) -> None:
        """One stream, until its client is done and answered, or it is cancelled."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            await _Stream(self, context, self._answer_limit(context)).run()
        finally:
            self._streams.discard(task)

    def close(self) -> None:
        """Cancels every open stream (shutdown, once the calls in flight are done)."""
        for task in self._streams:
            task.cancel()

    def _answer_limit(self, context: Context) -> int:
        limit = self._max_send_bytes
        for key, value in context.invocation_metadata() or ():
            if key == MAX_RECEIVE_KEY:
                with contextlib.suppress(ValueError):
                    announced = int(value)
                    if announced > 0:
                        limit = min(limit, announced)
        return limit


class _Stream:
    """One PredictMany stream's calls in flight, and its writes (one at a time: grpc.aio
    allows no concurrent writes on a call)."""

    def __init__(self, owner: PredictMany, context: Context, answer_limit: int) -> None:
        self._owner = owner
        self._context = context
        self._answer_limit = answer_limit
        # calls by id until their answer is ready: what a cancel may still stop (cancelling
        # a task inside grpc.aio's write would break the stream for every call on it)
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every call's task, answer written or not
        self._writing = asyncio.Lock()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (message := await self._context.read()) is not grpc.aio.EOF:
                assert isinstance(message, pb.PredictManyRequest)
                action = message.WhichOneof("action")
                if action == "cancel":
                    if running := self._calls.get(message.id):
                        running.cancel()  # an id no longer in flight: answered already
                elif refusal := _refusal(message, action, self._calls):
                    await self._write(_failed(message.id, *refusal))  # rare: inline
                else:
                    task = loop.create_task(self._answer(message))
                    self._calls[message.id] = task
                    self._tasks.add(task)
                    task.add_done_callback(functools.partial(self._ended, message.id))
            # the client is done writing: its calls in flight still get their answers
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in self._tasks:
                task.cancel()

    def _ended(self, id_: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._answered(id_, task)

    def _answered(self, id_: int, task: asyncio.Task[None] | None) -> None:
        """Call `id_`'s answer is ready: a cancel can no longer stop it (nor a later call
        with the same id be mistaken for it)."""
        if self._calls.get(id_) is task:
            del self._calls[id_]

    async def _answer(self, message: pb.PredictManyRequest) -> None:
        owner = self._owner
        request = message.call
        started = owner._clock.now()
        code = grpc.StatusCode.CANCELLED  # unless shown otherwise, as in the unary metrics
        timeout = message.timeout if message.HasField("timeout") else None
        seconds = None if timeout is None else timeout.seconds + timeout.nanos / 1e9
        scope = None
        try:
            # the loop's clock, as a unary call's deadline (timeout_on would start a task)
            async with asyncio.timeout(seconds) as scope:
                response = await owner._predict(request)
            answer = pb.PredictManyResponse(id=message.id, response=response)
            size = answer.ByteSize()
            if size > self._answer_limit:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                answer = _failed(
                    message.id,
                    code,
                    f"the response ({size} bytes) is larger than the {self._answer_limit} "
                    "bytes this stream may carry",
                )
            else:
                code = grpc.StatusCode.OK
        except Exception as error:
            if isinstance(error, TimeoutError) and scope is not None and scope.expired():
                # counted CANCELLED, as a unary call past its deadline; answered all the same
                # (a client that still waits, grpcurl say, must not wait for good)
                text = f"deadline exceeded: the call's timeout of {seconds:g} s passed"
                answer = _failed(message.id, grpc.StatusCode.DEADLINE_EXCEEDED, text)
            else:
                code, text, trailers = status_of(error, METHOD)
                answer = _failed(message.id, code, text, _details(trailers))
        finally:
            if owner._record is not None:
                owner._record(METHOD, request, code, started)
        self._answered(message.id, asyncio.current_task())
        await self._write(answer)

    async def _write(self, answer: pb.PredictManyResponse) -> None:
        try:
            async with self._writing:
                await self._context.write(answer)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the stream ended meanwhile: no one is left to answer


def _refusal(
    message: pb.PredictManyRequest, action: str | None, calls: dict[int, asyncio.Task[None]]
) -> tuple[grpc.StatusCode, str] | None:
    """Why a message that is not a cancel cannot start a call (None: it can)."""
    if action is None:
        return grpc.StatusCode.INVALID_ARGUMENT, "a PredictMany message needs `call` or `cancel`"
    if message.id in calls:
        text = f"call id {message.id} is already in flight on this stream; ids must be unique"
        return grpc.StatusCode.INVALID_ARGUMENT, text
    timeout = message.timeout
    if message.HasField("timeout") and (timeout.seconds < 0 or timeout.nanos < 0):
        return grpc.StatusCode.INVALID_ARGUMENT, "a call's timeout must not be negative"
    return None


def _failed(
    id_: int, code: grpc.StatusCode, message: str, details: bytes = b""
) -> pb.PredictManyResponse:
    status = pb.CallStatus(code=code.value[0], message=message, details=details)
    return pb.PredictManyResponse(id=id_, error=status)


def _details(trailers: tuple[tuple[str, str | bytes], ...]) -> bytes:
    for key, value in trailers:
        if key == DETAILS_KEY and isinstance(value, bytes):
            return value
    return b""
