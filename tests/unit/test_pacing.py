"""A stream's share of the servicer's message budget, and the one hold that enforces it."""

from __future__ import annotations

import asyncio

import pytest

from inference.pacing import DEFAULT_MESSAGES_PER_SECOND, Hold, stream_interval


def test_streams_share_the_budget_equally() -> None:
    assert stream_interval(256, DEFAULT_MESSAGES_PER_SECOND) == pytest.approx(0.040)
    assert stream_interval(128, DEFAULT_MESSAGES_PER_SECOND) == pytest.approx(0.020)
    # 8 streams get one message per 1.25 ms: faster than any engine makes tokens, so unpaced.
    assert stream_interval(8, DEFAULT_MESSAGES_PER_SECOND) < 0.002


def test_a_budget_of_zero_turns_pacing_off() -> None:
    assert stream_interval(1000, 0.0) == 0.0


def test_a_minimum_interval_paces_streams_below_their_share_and_only_those() -> None:
    assert stream_interval(8, DEFAULT_MESSAGES_PER_SECOND, 0.020) == 0.020
    assert stream_interval(1, 0.0, 0.020) == 0.020  # even with the budget off
    # Past 128 streams the share is the longer wait: the minimum changes nothing there.
    assert stream_interval(256, DEFAULT_MESSAGES_PER_SECOND, 0.020) == pytest.approx(0.040)


async def settle() -> None:
    """Lets every ready callback and task on the loop run (event order, not time)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_hold_releases_the_first_take_at_once_then_holds_until_something_urgent() -> None:
    loop = asyncio.get_running_loop()
    hold = Hold()
    hold.added(urgent=False)
    await asyncio.wait_for(hold.until_due(loop, 100.0), 1)
    hold.taken(loop)

    waiter = asyncio.create_task(hold.until_due(loop, 100.0))
    hold.added(urgent=False)
    await settle()
    assert not waiter.done(), "a non-urgent item was released before the interval"
    hold.added(urgent=True)
    await asyncio.wait_for(waiter, 1)


async def test_a_hold_waits_for_something_collected_and_lets_go_when_stopped() -> None:
    loop = asyncio.get_running_loop()
    hold = Hold()
    waiter = asyncio.create_task(hold.until_due(loop, 0.0))
    await settle()
    assert not waiter.done(), "released with nothing collected"
    hold.stop()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(hold.until_due(loop, 100.0), 1)  # stopped: never waits again
