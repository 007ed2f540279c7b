"""Admin writes through an etcd failover: retried while etcd may recover, then UNAVAILABLE
with etcd's reason; never a bare exception (which the server edge turns into INTERNAL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aetcd
import pytest

from modelyard.backoff import Backoff
from modelyard.errors import InvalidArgument, Unavailable
from modelyard_server.etcd_writes import retried

QUICK = Backoff(initial=0.001, cap=0.01)


def failing(times: int, error: Exception) -> tuple[Callable[[], asyncio.Future[str]], list[int]]:
    """A write that raises `error` `times` times, then returns "done"; and its attempt log."""
    attempts: list[int] = []

    def write() -> asyncio.Future[str]:
        attempts.append(len(attempts))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if len(attempts) <= times:
            future.set_exception(error)
        else:
            future.set_result("done")
        return future

    return write, attempts


@pytest.mark.parametrize(
    "error",
    [
        aetcd.ConnectionFailedError("etcdserver: leader changed"),
        aetcd.ConnectionTimeoutError("Deadline Exceeded"),
        TimeoutError(),
    ],
)
async def test_a_write_during_an_election_is_sent_again_until_etcd_takes_it(
    error: Exception,
) -> None:
    write, attempts = failing(3, error)
    assert await retried(write, what="drain worker 'w1'", within=5.0, backoff=QUICK) == "done"
    assert len(attempts) == 4


async def test_etcd_away_for_longer_than_the_wait_is_unavailable_with_its_reason() -> None:
    write, attempts = failing(10**6, aetcd.ConnectionFailedError("failed to connect"))
    with pytest.raises(Unavailable) as caught:
        await retried(write, what="drain worker 'w1'", within=0.2, backoff=QUICK)
    assert caught.value.message == (
        "etcd did not take the write to drain worker 'w1' within 0.2 s "
        "(ConnectionFailedError: failed to connect); retry"
    )
    assert len(attempts) > 1


async def test_a_write_that_hangs_is_abandoned_and_sent_again() -> None:
    attempts: list[int] = []

    async def hangs_once() -> str:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            await asyncio.Event().wait()  # a member that went quiet
        return "done"

    result = await retried(hangs_once, what="deploy graph 'g'", attempt=0.05, backoff=QUICK)
    assert (result, len(attempts)) == ("done", 2)


async def test_a_refusal_is_unavailable_at_once_naming_etcds_reason() -> None:
    write, attempts = failing(1, aetcd.ClientError("etcdserver: permission denied"))
    with pytest.raises(Unavailable, match=r"etcd refused the write to deploy graph 'g': .*denied"):
        await retried(write, what="deploy graph 'g'", backoff=QUICK)
    assert len(attempts) == 1


async def test_a_value_too_large_for_etcd_is_invalid_argument() -> None:
    write, attempts = failing(1, aetcd.InvalidArgumentError("etcdserver: request is too large"))
    with pytest.raises(InvalidArgument, match="too large to store"):
        await retried(write, what="deploy graph 'g'", backoff=QUICK)
    assert len(attempts) == 1
