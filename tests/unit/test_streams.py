"""Segmenting streamed text, and ordered bounded calls (composer.streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from composer.streams import Relay, Segmenter, call_in_order, chunks, segments
from modelyard.errors import InvalidArgument


def cut(pieces: list[str], delimiters: str = "") -> list[str]:
    segmenter = Segmenter(delimiters)
    out = [segment for piece in pieces for segment in segmenter.feed(piece)]
    rest = segmenter.finish()
    return [*out, rest] if rest is not None else out


def test_sentences_split_across_chunk_boundaries() -> None:
    pieces = ["Hel", "lo. Wo", "rld", "!", " How", " are", " you?", " Fine"]
    assert cut(pieces) == ["Hello.", "World!", "How are you?", "Fine"]


def test_a_segment_ends_as_soon_as_the_next_chunk_shows_the_space() -> None:
    segmenter = Segmenter()
    assert segmenter.feed("One.") == []  # "One.5" could still follow
    assert segmenter.feed(" Two") == ["One."]
    assert segmenter.feed(".\n") == ["Two."]  # a newline ends a segment at once
    assert segmenter.finish() is None


def test_runs_of_delimiters_and_delimiters_inside_words() -> None:
    # "3.14" stays whole; an abbreviation followed by a space does end a segment
    assert cut(["Pi is 3.14, e.g. roughly", ". Really?! Yes... ok"]) == [
        "Pi is 3.14, e.g.",
        "roughly.",
        "Really?!",
        "Yes...",
        "ok",
    ]


def test_newlines_and_blank_segments() -> None:
    assert cut(["first line\n\n", "second\nthird"]) == ["first line", "second", "third"]


def test_custom_delimiters() -> None:
    assert cut(["a; b", "; c. d"], delimiters=";") == ["a;", "b;", "c. d"]


def test_the_remainder_is_the_last_segment_and_the_segmenter_resets() -> None:
    segmenter = Segmenter()
    assert segmenter.feed("No delimiter at all") == []
    assert segmenter.finish() == "No delimiter at all"
    assert segmenter.finish() is None
    assert cut(["Ends with a stop."]) == ["Ends with a stop."]


async def test_relay_feeds_every_consumer_and_segments_follow_chunks() -> None:
    relay = Relay()
    first, second = relay.subscribe(), relay.subscribe()
    for piece in ["Hi. ", "Bye"]:
        relay.put({"text": piece})
    relay.close()
    assert [c async for c in chunks(first)] == [{"text": "Hi. "}, {"text": "Bye"}]
    assert [s async for s in segments(second, "", lambda c: c["text"])] == ["Hi.", "Bye"]


async def until(condition: Callable[[], bool]) -> None:
    """Lets other tasks run until `condition` holds: a bounded number of loop turns, no time."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_call_in_order_returns_in_order_and_bounds_concurrency() -> None:
    active = peak = 0
    held: dict[int, asyncio.Event] = {}
    finished: list[int] = []
    delivered: list[tuple[int, str, str]] = []

    async def call(index: int, item: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        held[index] = release = asyncio.Event()
        await release.wait()
        finished.append(index)
        active -= 1
        return item.upper()

    items = [chr(ord("a") + i) for i in range(10)]
    running = asyncio.create_task(
        call_in_order(
            items, call, limit=3, on_result=lambda i, item, r: delivered.append((i, item, r))
        )
    )
    # each time three calls are in flight (or all that are left), the latest one finishes
    while len(finished) < len(items):
        await until(lambda: active >= min(3, len(items) - len(finished)))
        latest = max(i for i in held if i not in finished)
        held[latest].set()
        await until(lambda: latest in finished)  # noqa: B023 (awaited here, in this turn)
    results = await running
    assert finished == [2, 3, 4, 5, 6, 7, 8, 9, 1, 0]  # later items finished first
    assert results == [item.upper() for item in items]
    assert delivered == [(i, item, item.upper()) for i, item in enumerate(items)]
    assert peak == 3


async def test_call_in_order_delivers_each_result_as_soon_as_the_earlier_ones_are_done() -> None:
    second_done = asyncio.Event()
    delivered: list[int] = []

    async def call(index: int, item: int) -> int:
        if index == 0:
            await second_done.wait()
        elif index == 1:
            second_done.set()
        return item

    async def source() -> AsyncIterator[int]:
        for i in range(3):
            yield i
            await asyncio.sleep(0)

    assert await call_in_order(source(), call, limit=4, on_result=lambda i, *_: delivered.append(i))
    assert delivered == [0, 1, 2]


async def test_call_in_order_failure_cancels_the_others_and_closes_the_source() -> None:
    cancelled: list[int] = []
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    async def call(index: int, item: int) -> int:
        if index == 2:
            raise InvalidArgument("bad item 2")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return item

    with pytest.raises(InvalidArgument, match="bad item 2"):
        await call_in_order(source(), call, limit=3)
    assert sorted(cancelled) == [0, 1]
    assert closed.is_set()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_call_in_order_with_nothing_to_do() -> None:
    async def call(index: int, item: int) -> int:
        raise AssertionError("not called")

    assert await call_in_order([], call, limit=1) == []
    with pytest.raises(ValueError, match="at least 1"):
        await call_in_order([1], call, limit=0)
