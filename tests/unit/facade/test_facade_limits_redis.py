"""The Redis limiter on a real redis-server: budgets shared by replicas, lease expiry and
refresh on Redis' clock, and what happens when Redis is unreachable (no wall-clock asserts:
every test waits for an outcome, bounded by a deadline)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from facade.limits import KeyLimits, LimitStoreUnavailable, RateLimitExceeded
from facade.limits_redis import RedisLimiter
from tests.support.redis_server import RedisServer, require_redis_server
from tests.unit.facade.limit_scenarios import Clock

ONE_AT_A_TIME = KeyLimits(max_concurrent=1)


class Replicas:
    """Limiters that share one Redis, as facade replicas do; all closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[RedisLimiter] = []

    def new(self, **options: object) -> RedisLimiter:
        limiter = RedisLimiter.from_url(self.url, **options)  # type: ignore[arg-type]
        self.made.append(limiter)
        return limiter


@pytest.fixture()
async def replicas(redis_url: str) -> AsyncIterator[Replicas]:
    made = Replicas(redis_url)
    yield made
    for limiter in made.made:
        await limiter.close()


async def admitted_within(limiter: RedisLimiter, limits: KeyLimits, deadline_s: float) -> bool:
    """Whether `limiter` admits a request before the deadline (trying every 50 ms)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            await limiter.acquire("k", limits, 0)
        except RateLimitExceeded:
            await asyncio.sleep(0.05)
        else:
            return True
    return False


async def test_replicas_share_one_budget(replicas: Replicas) -> None:
    first, second = replicas.new(), replicas.new()
    limits = KeyLimits(requests_per_minute=3)
    outcomes = []
    for limiter in [first, second] * 4:
        try:
            await limiter.acquire("k", limits, 0)
            outcomes.append("ok")
        except RateLimitExceeded:
            outcomes.append("429")
    assert outcomes == ["ok"] * 3 + ["429"] * 5


async def test_replicas_share_concurrency_slots(replicas: Replicas) -> None:
    first, second = replicas.new(), replicas.new()
    lease = await first.acquire("k", ONE_AT_A_TIME, 0)
    with pytest.raises(RateLimitExceeded, match="concurrent"):
        await second.acquire("k", ONE_AT_A_TIME, 0)
    await lease.release(0)
    await (await second.acquire("k", ONE_AT_A_TIME, 0)).release(0)


async def test_a_crashed_replicas_lease_expires_after_its_ttl(replicas: Replicas) -> None:
    crashed = replicas.new(lease_ttl_s=0.5)
    await crashed.acquire("k", ONE_AT_A_TIME, 0)
    await crashed.close()  # its refresher stops; the lease is never released
    survivor = replicas.new()
    with pytest.raises(RateLimitExceeded):
        await survivor.acquire("k", ONE_AT_A_TIME, 0)
    # Redis TIME passes the lease's expiry; the slot comes back without anyone releasing it.
    assert await admitted_within(survivor, ONE_AT_A_TIME, deadline_s=20.0)


async def test_a_live_lease_is_refreshed_past_its_ttl(replicas: Replicas) -> None:
    clock = Clock()  # the scripts' time: moved by hand, so the refresh decides alone
    holder = replicas.new(lease_ttl_s=15.0, clock=clock)
    other = replicas.new(clock=clock)
    lease = await holder.acquire("k", ONE_AT_A_TIME, 0)
    for _ in range(4):  # 40 s: far past the TTL, kept alive by the refreshes
        clock.now += 10.0
        await holder.refresh()
        with pytest.raises(RateLimitExceeded):
            await other.acquire("k", ONE_AT_A_TIME, 0)
    clock.now += 16.0  # no refresh: expired
    await (await other.acquire("k", ONE_AT_A_TIME, 0)).release(0)
    await lease.release(0)


async def test_the_refresher_keeps_a_running_request_on_redis_time(replicas: Replicas) -> None:
    holder = replicas.new(lease_ttl_s=1.2)  # re-scored every 0.4 s
    other = replicas.new()
    lease = await holder.acquire("k", ONE_AT_A_TIME, 0)
    await asyncio.sleep(2.5)  # twice the TTL: only the refresher keeps the lease
    with pytest.raises(RateLimitExceeded):
        await other.acquire("k", ONE_AT_A_TIME, 0)
    await lease.release(0)
    await (await other.acquire("k", ONE_AT_A_TIME, 0)).release(0)


def _dead_url() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


async def test_unreachable_redis_fails_open_logs_once_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[str] = []
    limiter = RedisLimiter.from_url(_dead_url(), on_store_error=errors.append)
    limits = KeyLimits(requests_per_minute=1, max_concurrent=1)
    with caplog.at_level(logging.WARNING, logger="facade.limits_redis"):
        leases = [await limiter.acquire("k", limits, 0) for _ in range(5)]
        for lease in leases:
            await lease.release(10)
    await limiter.close()
    assert errors == ["acquire"] * 5  # fail-open leases hold nothing: no release calls
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert "admitting requests unlimited" in unreachable[0].getMessage()


async def test_unreachable_redis_fails_closed_when_configured() -> None:
    errors: list[str] = []
    limiter = RedisLimiter.from_url(_dead_url(), fail_open=False, on_store_error=errors.append)
    for _ in range(3):
        with pytest.raises(LimitStoreUnavailable):
            await limiter.acquire("k", KeyLimits(requests_per_minute=5), 0)
    await limiter.close()
    assert errors == ["acquire"] * 3


async def test_a_hung_redis_costs_one_timeout_then_requests_skip_it(silent_server: str) -> None:
    errors: list[str] = []
    limiter = RedisLimiter.from_url(silent_server, timeout_s=0.2, on_store_error=errors.append)
    # Both admitted (fail-open); the first waited for the timeout, the second did not try
    # (the retry interval has not passed), so a hung Redis never stalls every request.
    for _ in range(2):
        await limiter.acquire("k", KeyLimits(requests_per_minute=5), 0)
    await limiter.close()
    assert errors == ["acquire", "acquire"]


async def test_limits_are_shared_again_once_redis_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis_server()
    server = RedisServer(tmp_path).start()
    limiter = RedisLimiter.from_url(server.url, retry_interval_s=0.0)
    limits = KeyLimits(requests_per_minute=1)
    try:
        await limiter.acquire("k", limits, 0)
        server.kill()
        with caplog.at_level(logging.WARNING, logger="facade.limits_redis"):
            await limiter.acquire("k", limits, 0)  # fail-open: admitted
            await limiter.acquire("k", limits, 0)
            server.start()  # a new, empty Redis on the same port
            await limiter.acquire("k", limits, 0)  # through Redis: the budget's one request
            with pytest.raises(RateLimitExceeded):
                await limiter.acquire("k", limits, 0)
    finally:
        await limiter.close()
        server.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
