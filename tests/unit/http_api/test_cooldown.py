"""Passive health: consecutive failures cool a registration down; it comes back by itself."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.errors import InvalidArgument, Unavailable
from modelyard_server.http_api.cooldown import Cooldowns
from tests.support.clock import FakeClock


def _cooldowns(clock: FakeClock) -> Cooldowns:
    return Cooldowns(allowed_fails=3, cooldown_s=30.0, clock=clock)


def _fail(cooldowns: Cooldowns, registration: str = "api-1") -> None:
    with pytest.raises(Unavailable), cooldowns.call(registration):
        raise Unavailable("the API answered HTTP 500")


def _succeed(cooldowns: Cooldowns, registration: str = "api-1") -> None:
    with cooldowns.call(registration):
        pass


def _fails_fast(cooldowns: Cooldowns, registration: str = "api-1") -> str:
    ran = False
    with pytest.raises(Unavailable) as caught, cooldowns.call(registration):
        ran = True
    assert not ran  # the call never reached the network
    return caught.value.message


def test_allowed_fails_consecutive_failures_cool_it_down() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    _fail(cooldowns)
    _fail(cooldowns)
    assert not cooldowns.cooling("api-1")
    _fail(cooldowns)
    assert cooldowns.cooling("api-1")
    assert _fails_fast(cooldowns) == "cooling down for 30.0 s more after 3 consecutive failed calls"


def test_a_success_resets_the_count() -> None:
    cooldowns = _cooldowns(FakeClock())
    _fail(cooldowns)
    _fail(cooldowns)
    _succeed(cooldowns)
    _fail(cooldowns)
    _fail(cooldowns)
    assert not cooldowns.cooling("api-1")


def test_registrations_are_judged_apart() -> None:
    cooldowns = _cooldowns(FakeClock())
    for _ in range(3):
        _fail(cooldowns, "api-bad")
    assert cooldowns.cooling("api-bad")
    _succeed(cooldowns, "api-good")
    assert not cooldowns.cooling("api-good")


async def test_after_the_cooldown_one_call_tries_and_its_success_brings_it_back() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    for _ in range(3):
        _fail(cooldowns)
    await clock.advance(29.0)
    assert "1.0 s more" in _fails_fast(cooldowns)
    await clock.advance(1.0)
    with cooldowns.call("api-1"):  # the trial call
        assert "one call is trying" in _fails_fast(cooldowns)  # the others still wait
    assert not cooldowns.cooling("api-1")
    _fail(cooldowns)  # counting starts afresh
    _succeed(cooldowns)


async def test_a_failed_trial_cools_it_down_again_at_once() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    for _ in range(3):
        _fail(cooldowns)
    await clock.advance(30.0)
    _fail(cooldowns)
    assert cooldowns.cooling("api-1")
    await clock.advance(29.0)
    assert cooldowns.cooling("api-1")


async def test_a_cancelled_trial_leaves_the_next_call_to_try() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    for _ in range(3):
        _fail(cooldowns)
    await clock.advance(30.0)
    with pytest.raises(asyncio.CancelledError), cooldowns.call("api-1"):
        raise asyncio.CancelledError
    _succeed(cooldowns)
    assert not cooldowns.cooling("api-1")


def test_an_invalid_request_says_nothing_about_the_registration() -> None:
    cooldowns = _cooldowns(FakeClock())
    for _ in range(5):
        with pytest.raises(InvalidArgument), cooldowns.call("api-1"):
            raise InvalidArgument("no prompt")
    assert not cooldowns.cooling("api-1")
