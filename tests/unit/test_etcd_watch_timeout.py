"""A watch whose create timed out must not hand its late answer, and with it another
prefix's events, to the next watch created: the stream ends instead, and the next watch
goes on a new one (modelyard_server.etcd_auth.RefusalAwareWatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aetcd import exceptions, rpc

from modelyard_server.etcd_auth import RefusalAwareWatcher
from tests.helpers import eventually


class Stream:
    """One Watch call: the requests it sent, and the answers the test gives it."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.answers: asyncio.Queue[Any] = asyncio.Queue()


class WatchStub:
    def __init__(self) -> None:
        self.streams: list[Stream] = []

    def Watch(self, requests: AsyncIterator[Any], metadata: Any = None) -> AsyncIterator[Any]:
        stream = Stream()
        self.streams.append(stream)
        return self._run(stream, requests)

    async def _run(self, stream: Stream, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async def read() -> None:
            async for request in requests:
                stream.requests.append(request)

        reading = asyncio.create_task(read())
        try:
            while True:
                yield await stream.answers.get()
        finally:
            reading.cancel()


def created(watch_id: int) -> Any:
    return rpc.WatchResponse(created=True, watch_id=watch_id)


def put(watch_id: int, key: bytes) -> Any:
    response = rpc.WatchResponse(watch_id=watch_id)
    response.events.add(kv={"key": key, "value": b"v"})
    return response


async def test_a_late_answer_to_a_timed_out_create_does_not_reach_the_next_watch() -> None:
    stub = WatchStub()
    watcher = RefusalAwareWatcher(stub, timeout=0.05, on_refused=None)
    seen: list[bytes] = []

    async def on_event(event: Any) -> None:
        seen.append(event.kv.key)

    with pytest.raises(exceptions.WatchTimeoutError):  # etcd does not answer in time
        await watcher.add_callback(b"/graphs/", lambda _: None, range_end=b"/graphs0")
    first = stub.streams[0]
    # the next create is sent: on a new stream, or (the bug) on the first one

    second = asyncio.create_task(
        watcher.add_callback(b"/workers/", on_event, range_end=b"/workers0")
    )
    await eventually(lambda: sum(len(s.requests) for s in stub.streams) == 2, timeout=30)
    # etcd's late answer to the first create, then an event of that watch, on its stream
    first.answers.put_nowait(created(1))
    first.answers.put_nowait(put(1, b"/graphs/g"))
    newest = stub.streams[-1]
    newest.answers.put_nowait(created(2))
    callback = await second
    newest.answers.put_nowait(put(2, b"/workers/w"))
    await eventually(lambda: bool(seen), timeout=30)

    assert callback.watch_id == 2
    assert seen == [b"/workers/w"]
    await watcher.shutdown()
