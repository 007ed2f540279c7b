"""`workers.predict_many.PredictMany` without a network: its streams' lifetimes."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
import pytest

from modelyard.multiplex import MAX_RECEIVE_KEY
from modelyard.v1 import predict_pb2 as pb
from workers.predict_many import PredictMany


class IdleStream:
    """A stream context whose client sends nothing and never finishes writing."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.written: list[Any] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def read(self) -> Any:
        await asyncio.Event().wait()
        return grpc.aio.EOF

    async def write(self, message: Any) -> None:
        self.written.append(message)


async def unused(request: pb.PredictRequest) -> pb.PredictResponse:
    raise AssertionError("no call was sent")


@pytest.mark.asyncio
async def test_close_ends_every_open_stream_even_one_whose_client_sends_nothing() -> None:
    many = PredictMany(unused, max_send_bytes=1024)
    serving = [asyncio.ensure_future(many.serve(IdleStream())) for _ in range(3)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert many.open_streams == 3
    many.close()
    results = await asyncio.wait_for(asyncio.gather(*serving, return_exceptions=True), 5.0)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert many.open_streams == 0


@pytest.mark.parametrize(
    ("announced", "limit"),
    [
        ((), 1024),
        (((MAX_RECEIVE_KEY, "100"),), 100),
        (((MAX_RECEIVE_KEY, "99999"),), 1024),
        (((MAX_RECEIVE_KEY, "lots"),), 1024),
        (((MAX_RECEIVE_KEY, "-5"),), 1024),
    ],
)
def test_answers_are_bounded_by_the_smaller_of_the_two_limits(
    announced: tuple[tuple[str, str], ...], limit: int
) -> None:
    many = PredictMany(unused, max_send_bytes=1024)
    assert many._answer_limit(IdleStream(announced)) == limit  # type: ignore[arg-type]
