"""Predict calls of one channel as messages of one long-lived PredictMany stream.

A unary call on grpc.aio pays for a call's set-up and teardown on both ends; a message on an
open stream does not (measured in `workers.predict_many`: ~0.34 against ~0.75 ms a round
trip, and well under half the worker's CPU). `MultiplexedStub` stands in for a channel's
Predict stub: its `Predict` goes over the stream when the caller allows it (`multiplex`,
asked per call: the composer allows untraced calls, so a traced one keeps its client and
server spans) and the request is small (`MAX_MULTIPLEXED_REQUEST_BYTES`: a message above a
worker's receive limit would break the stream, and every call on it); anything else, and
`PredictStream`, are the channel's own unary calls.

A call over the stream behaves as a unary one to its caller, errors included: the worker's
answer carries the status a Predict would end with, raised here as the same
`grpc.aio.AioRpcError` (code, message, details). A timeout is the call's deadline
(DEADLINE_EXCEEDED), and a timeout or cancellation tells the worker to stop the call. When
the stream ends before a call is answered (the worker shut down, died, or the connection
broke), the call fails UNAVAILABLE: the worker never answered it, so it is safe to retry
elsewhere, as the routed client does. An authentication or permission refusal of the stream
is each call's own error. A worker without PredictMany (UNIMPLEMENTED) is called unary from
then on. The next call after a stream ended opens a new one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from modelyard.v1 import predict_pb2 as pb
from modelyard.v1 import predict_pb2_grpc

#: Larger requests take unary Predict (see the module docstring).
MAX_MULTIPLEXED_REQUEST_BYTES = 64 * 1024
#: Stream metadata with the client's receive limit: a larger answer fails its call alone.
MAX_RECEIVE_KEY = "modelyard-max-receive-bytes"
#: Streams per channel at most, and the calls in flight on each before another is opened.
MAX_STREAMS = 4
CALLS_PER_STREAM = 2
_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: Refusals of the stream that are every call's own answer (not retried elsewhere).
_OWN_ANSWERS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class MultiplexedStub:
    """A channel's Predict stub whose `Predict` goes over one PredictMany stream when
    `multiplex()` says so; `PredictStream` and the rest are the stub's own."""

    __slots__ = ("PredictStream", "_many", "_multiplex", "_stub")

    def __init__(
        self,
        stub: predict_pb2_grpc.PredictAsyncStub,
        multiplex: Callable[[], bool],
        *,
        metadata: Sequence[tuple[str, str]] = (),
        max_receive_bytes: int,
    ) -> None:
        """`metadata` goes on the stream (a bearer token: the channel's token interceptors
        cover unary and server-streaming calls only)."""
        self._stub = stub
        self._multiplex = multiplex
        self._many = PredictMany(stub, metadata=metadata, max_receive_bytes=max_receive_bytes)
        self.PredictStream = stub.PredictStream

    def Predict(
        self, request: pb.PredictRequest, *, timeout: float | None = None
    ) -> Awaitable[pb.PredictResponse]:
        if (
            not self._many.unsupported
            and self._multiplex()
            and request.ByteSize() <= MAX_MULTIPLEXED_REQUEST_BYTES
        ):
            return self._many.predict(request, timeout)
        return self._stub.Predict(request, timeout=timeout)


class PredictMany:
    """The calls of one channel's PredictMany streams: one while a call or two are in
    flight, more under load (up to `MAX_STREAMS`). A stream's writes go one at a time and
    each waits for gRPC to take it, so at c=16 one stream is a queue; four cut that wait
    (a probe, bench/README "Composer: per hop": 1.3-1.4x the calls a second of one stream,
    at less CPU a call).
    A stream is opened at the first call that needs it, and again after it ended."""

    def __init__(
        self,
        stub: predict_pb2_grpc.PredictAsyncStub,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        max_receive_bytes: int,
    ) -> None:
        self._stub = stub
        self._metadata = (*metadata, (MAX_RECEIVE_KEY, str(max_receive_bytes)))
        self._streams: list[_Stream] = []
        #: The worker has no PredictMany: its calls are unary.
        self.unsupported = False

    async def predict(
        self, request: pb.PredictRequest, timeout: float | None
    ) -> pb.PredictResponse:
        try:
            return await self._stream().call(request, timeout)
        except _Unsupported:
            self.unsupported = True
            return await self._stub.Predict(request, timeout=timeout)

    def _stream(self) -> _Stream:
        """The open stream with the fewest calls in flight; a new one when that is
        `CALLS_PER_STREAM` or more and fewer than `MAX_STREAMS` are open."""
        streams = self._streams
        if streams and not (first := streams[0]).ended and first.in_flight < CALLS_PER_STREAM:
            return first  # the usual case below load: one stream, free
        if any(s.ended for s in streams):
            streams[:] = [s for s in streams if not s.ended]
        quietest = min(streams, key=_in_flight) if streams else None
        if quietest is not None and (
            quietest.in_flight < CALLS_PER_STREAM or len(streams) >= MAX_STREAMS
        ):
            return quietest
        opened = _Stream(self._stub.PredictMany(metadata=self._metadata))
        streams.append(opened)
        return opened


def _in_flight(stream: _Stream) -> int:
    return stream.in_flight


class _Unsupported(Exception):
    """The worker answered the stream UNIMPLEMENTED."""


class _Stream:
    """One open PredictMany call: its calls waiting for answers, and the task reading them."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._waiting: dict[int, asyncio.Future[pb.PredictManyResponse]] = {}
        self._ids = itertools.count(1)
        self._writing = asyncio.Lock()  # grpc.aio allows no concurrent writes on a call
        self._cancelling: set[asyncio.Task[None]] = set()
        self.ended = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def call(self, request: pb.PredictRequest, timeout: float | None) -> pb.PredictResponse:
        id_ = next(self._ids)
        answer: asyncio.Future[pb.PredictManyResponse] = asyncio.get_running_loop().create_future()
        self._waiting[id_] = answer
        message = pb.PredictManyRequest(id=id_, call=request)
        if timeout is not None:
            whole = int(timeout)
            message.timeout.seconds = whole
            message.timeout.nanos = int((timeout - whole) * 1e9)
        try:
            async with asyncio.timeout(timeout):
                try:
                    async with self._writing:
                        await self._call.write(message)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                    pass  # the stream ended: the reader fails `answer` with the reason
                return _result(await answer)
        except TimeoutError:
            self._cancel(id_)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "Deadline Exceeded",
            ) from None
        except asyncio.CancelledError:
            self._cancel(id_)
            raise
        finally:
            self._waiting.pop(id_, None)

    def _cancel(self, id_: int) -> None:
        """Tells the worker to stop call `id_` (in a task: the caller is leaving now)."""
        if self.ended:
            return
        task = asyncio.get_running_loop().create_task(self._send_cancel(id_))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _send_cancel(self, id_: int) -> None:
        try:
            async with self._writing:
                await self._call.write(pb.PredictManyRequest(id=id_, cancel=True))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the stream ended, and the call with it

    async def _read(self) -> None:
        failure: grpc.aio.AioRpcError | None = None
        try:
            while (answer := await self._call.read()) is not grpc.aio.EOF:
                waiting = self._waiting.get(answer.id)
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        except grpc.aio.AioRpcError as error:
            failure = error
        except asyncio.CancelledError:
            pass  # the channel closed: the calls still waiting fail below
        finally:
            self.ended = True
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(_unanswered(failure))


def _unanswered(failure: grpc.aio.AioRpcError | None) -> Exception:
    """What a call the stream never answered fails with (the module docstring)."""
    code = failure.code() if failure is not None else grpc.StatusCode.OK
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return _Unsupported()
    if failure is not None and code in _OWN_ANSWERS:
        # a copy for each call: one exception raised in several tasks would share tracebacks
        return grpc.aio.AioRpcError(
            code, failure.initial_metadata(), failure.trailing_metadata(), failure.details()
        )
    why = f"{code.name}: {failure.details()}" if failure is not None else "it ended"
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        f"the worker's PredictMany stream ended before it answered ({why})",
    )


def _result(answer: pb.PredictManyResponse) -> pb.PredictResponse:
    if answer.HasField("response"):
        return answer.response
    status = answer.error
    trailing = (
        grpc.aio.Metadata(("grpc-status-details-bin", status.details))
        if status.details
        else grpc.aio.Metadata()
    )
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message)
