"""Per-key budgets: token buckets for requests and tokens, concurrency, and Retry-After.

The scenario table (limit_scenarios.py) runs against the in-memory limiter and against the
Redis one on a real redis-server, so both follow the same rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from facade.limits import (
    ConcurrencyGate,
    InMemoryLimiter,
    Limiter,
    RateLimitExceeded,
    TokenBucket,
    estimate_tokens,
)
from tests.unit.facade.limit_scenarios import SCENARIOS, Clock, Step, play


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield InMemoryLimiter(clock)
        return
    from facade.limits_redis import RedisLimiter

    redis = RedisLimiter.from_url(request.getfixturevalue("redis_url"), clock=clock)
    yield redis
    await redis.close()


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_scenario(limiter: Limiter, clock: Clock, steps: list[Step]) -> None:
    await play(limiter, clock, steps)


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
