"""Streaming edges: relaying a node's chunks to its consumers, cutting streamed text into
segments, and calling a model on each item of a stream (or list) with bounded overlap while
delivering the results in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
Chunk = dict[str, Any]

DEFAULT_DELIMITERS = ".!?\n"


class Segmenter:
    """Cuts streamed text into segments (sentences, by default) as soon as each is complete.

    A segment ends after a delimiter, or a run of them ("?!", "..."), that is followed by
    whitespace. So "3.14" and "e.g.x" end none, and a chunk ending in "." ends a segment
    only once the next chunk shows a space after it (or the stream ends: `finish`); models
    stream words with their leading space, so this costs at most one chunk of latency. A
    delimiter that is whitespace itself (the default "\\n") ends a segment at once.
    Segments are stripped of surrounding whitespace; empty ones are dropped. Scripts that
    put no space after a full stop (e.g. "。") segment only on whitespace delimiters.
    """

    def __init__(self, delimiters: str = "") -> None:
        self._delimiters = frozenset(delimiters or DEFAULT_DELIMITERS)
        self._buffer = ""
        self._scanned = 0  # the buffer before this offset holds no boundary

    def feed(self, text: str) -> list[str]:
        """Adds a chunk of text; returns the segments it completed, in order."""
        buffer = self._buffer + text
        segments: list[str] = []
        start, i = 0, self._scanned
        while i < len(buffer):
            if buffer[i] not in self._delimiters:
                i += 1
                continue
            end = i
            while end < len(buffer) and self._is_mark(buffer[end]):
                end += 1
            if end == i:  # a whitespace delimiter
                end += 1
            elif end == len(buffer):
                break  # what follows the run comes with a later chunk
            elif not buffer[end].isspace():
                i = end  # "3.14": a delimiter inside a word
                continue
            _add(segments, buffer[start:end])
            start = i = end
        self._buffer = buffer[start:]
        self._scanned = i - start
        return segments

    def finish(self) -> str | None:
        """The text after the last boundary (the last segment), once the stream ended."""
        rest = self._buffer.strip()
        self._buffer, self._scanned = "", 0
        return rest or None

    def _is_mark(self, char: str) -> bool:
        return char in self._delimiters and not char.isspace()


def _add(segments: list[str], text: str) -> None:
    if text := text.strip():
        segments.append(text)


class Relay:
    """Hands one streaming node's chunks to each of its consumers, in order; None ends the
    stream. Inboxes are unbounded so that a slow consumer never stalls the generation."""

    def __init__(self) -> None:
        self._inboxes: list[asyncio.Queue[Chunk | None]] = []

    def subscribe(self) -> asyncio.Queue[Chunk | None]:
        inbox: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._inboxes.append(inbox)
        return inbox

    def put(self, chunk: Chunk) -> None:
        for inbox in self._inboxes:
            inbox.put_nowait(chunk)

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put_nowait(None)


async def chunks(inbox: asyncio.Queue[Chunk | None]) -> AsyncIterator[Chunk]:
    while (chunk := await inbox.get()) is not None:
        yield chunk


async def segments(
    inbox: asyncio.Queue[Chunk | None], delimiters: str, text_of: Callable[[Chunk], str]
) -> AsyncIterator[str]:
    """The segments of the text `text_of` finds in each chunk, each as soon as it is
    complete; the text after the last boundary comes once the stream ends."""
    segmenter = Segmenter(delimiters)
    while (chunk := await inbox.get()) is not None:
        for segment in segmenter.feed(text_of(chunk)):
            yield segment
    if (rest := segmenter.finish()) is not None:
        yield rest


async def call_in_order(
    items: AsyncIterable[T] | Iterable[T],
    call: Callable[[int, T], Awaitable[R]],
    *,
    limit: int,
    on_result: Callable[[int, T, R], None] | None = None,
) -> list[R]:
    """Calls `call(index, item)` for each item, at most `limit` at once; returns the results
    in item order and hands each to `on_result` in item order as soon as it and every
    earlier one are done (a later item finishing first waits for the earlier ones).

    Items are pulled only when a slot is free, so a stream is consumed as it arrives. The
    first failure cancels every other call (and stops pulling items) and is raised as is.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    slots = asyncio.Semaphore(limit)
    pending: asyncio.Queue[tuple[int, T, asyncio.Task[R]] | None] = asyncio.Queue()
    results: list[R] = []

    async def bounded(index: int, item: T) -> R:
        try:
            return await call(index, item)
        finally:
            slots.release()

    async def deliver() -> None:
        while (entry := await pending.get()) is not None:
            index, item, task = entry
            # a failed call fails the whole group (and so this wait): nothing to handle here
            results.append(await task)
            if on_result is not None:
                on_result(index, item, results[-1])

    iterator = aiter(items) if isinstance(items, AsyncIterable) else _aiter(items)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(deliver())
            index = 0
            while True:
                await slots.acquire()
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                pending.put_nowait((index, item, group.create_task(bounded(index, item))))
                index += 1
            pending.put_nowait(None)
    except BaseExceptionGroup as failures:
        raise first_error(failures) from None
    finally:
        # an item source left suspended would be finalized later, outside this run
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return results


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of an exception group (what failed first, the rest is fallout)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _aiter(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item
