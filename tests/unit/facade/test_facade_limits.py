"""Per-key budgets: token buckets for requests and tokens, concurrency, and Retry-After."""

from __future__ import annotations

import pytest

from facade.limits import (
    ConcurrencyGate,
    InMemoryLimiter,
    KeyLimits,
    RateLimitExceeded,
    TokenBucket,
    estimate_tokens,
)


class Clock:
    """A hand-driven monotonic clock, so refill timing is exact and instant."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


async def test_requests_per_minute_refuse_then_refill(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(requests_per_minute=2)
    for _ in range(2):
        await (await limiter.acquire("k", limits, 0)).release(0)
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire("k", limits, 0)
    # One request refills every 30 s at 2/min.
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert "requests per minute" in info.value.message
    clock.now += 29.0
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire("k", limits, 0)
    assert info.value.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    await limiter.acquire("k", limits, 0)


async def test_keys_have_separate_budgets(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(requests_per_minute=1)
    await limiter.acquire("a", limits, 0)
    await limiter.acquire("b", limits, 0)
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("a", limits, 0)


async def test_tokens_are_charged_up_front_and_corrected_on_release(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(tokens_per_minute=600)  # 10 tokens a second
    lease = await limiter.acquire("k", limits, 500)
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire("k", limits, 200)
    assert info.value.retry_after_s == pytest.approx(10.0)  # 100 left, 100 missing at 10/s
    # The request really used 100 tokens: 400 come back.
    await lease.release(100)
    await limiter.acquire("k", limits, 200)


async def test_underestimate_puts_the_key_in_debt(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(tokens_per_minute=600)
    lease = await limiter.acquire("k", limits, 100)
    await lease.release(1100)  # 1000 more than charged: the bucket is at -500
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire("k", limits, 1)
    assert info.value.retry_after_s == pytest.approx(50.1)


async def test_a_request_bigger_than_the_budget_still_runs_on_a_full_bucket(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    await limiter.acquire("k", KeyLimits(tokens_per_minute=100), 10_000)


async def test_concurrency_slot_comes_back_on_release(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(max_concurrent=1)
    lease = await limiter.acquire("k", limits, 0)
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire("k", limits, 0)
    assert info.value.retry_after_s == 1.0
    await lease.release(None)
    await lease.release(None)  # releasing twice frees one slot, not two
    second = await limiter.acquire("k", limits, 0)
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("k", limits, 0)
    await second.release(5)


async def test_refusal_charges_nothing(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    limits = KeyLimits(requests_per_minute=10, tokens_per_minute=100)
    await limiter.acquire("k", limits, 100)
    for _ in range(5):
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire("k", limits, 50)
    clock.now += 30.0  # 50 tokens back
    await limiter.acquire("k", limits, 50)


async def test_changed_limits_apply_and_in_flight_leases_still_balance(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    lease = await limiter.acquire("k", KeyLimits(max_concurrent=1), 0)
    bigger = KeyLimits(max_concurrent=2)
    second = await limiter.acquire("k", bigger, 0)
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("k", bigger, 0)
    await lease.release(0)
    await second.release(0)
    await limiter.acquire("k", bigger, 0)
    await limiter.acquire("k", bigger, 0)


async def test_unlimited_key_is_never_refused(clock: Clock) -> None:
    limiter = InMemoryLimiter(clock)
    for _ in range(1000):
        await limiter.acquire("k", KeyLimits(), 10**9)


def test_bucket_never_exceeds_capacity() -> None:
    bucket = TokenBucket(capacity=60, level=0, updated=0.0)
    bucket.refill(10_000.0)
    assert bucket.level == 60
    assert bucket.wait_for(61) == pytest.approx(1.0)


def test_gate_caps_in_flight_requests() -> None:
    gate = ConcurrencyGate(2)
    gate.enter()
    gate.enter()
    with pytest.raises(RateLimitExceeded):
        gate.enter()
    gate.exit()
    gate.enter()
    unlimited = ConcurrencyGate(0)
    for _ in range(100):
        unlimited.enter()


def test_estimate_counts_prompt_characters_and_completion_caps() -> None:
    assert estimate_tokens(400, None, 1) == 100
    assert estimate_tokens(401, 50, 2) == 101 + 100
