"""Per-key limits shared by every facade replica through Redis (TENSORCHAT_REDIS_URL).

Each key has two Redis keys, both with the hash tag `{name}` so that a Redis Cluster would put
them in one slot (a script may only touch keys of one slot):

- `tc:rl:{name}`, a hash: the two token buckets' levels (`rq`, `tk`), when they were last
  refilled (`ts`, Redis time in seconds) and the limits they were filled under (`rpm`,
  `tpm`). A missing hash, or one written under other limits, reads as full buckets, as a
  new key does in `InMemoryLimiter`; the hash expires once both buckets would be full.
- `tc:cc:{name}`, a sorted set of lease ids scored by their expiry (Redis time). Admission
  drops expired leases before it counts, and this process re-scores its live leases every
  `lease_ttl_s / 3`, so a replica that dies holds its slots at most `lease_ttl_s`.

Admission and release are Lua scripts (atomic: no other replica runs between the check and
the charge) that read Redis' own clock (`TIME`), so replicas' clocks never matter. The rules
(window, charge, waits, messages) are facade/limits.py's; the scripts only refill, compare
and charge, and return the levels (refilled; after the charge when admitted) from which
`budget_refusal` builds the 429 and facade/ratelimit_headers.py the x-ratelimit-* headers.

If Redis cannot be reached within `timeout_s`, the limiter fails open (admits, the default)
or closed (`LimitStoreUnavailable`, a 503) as configured; it logs the outage once when it
starts and once when it ends, counts every failed call through `on_store_error`, and while
the outage lasts tries Redis at most once per `retry_interval_s` so that requests do not each
wait for the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as redis

from facade.ids import random_hex
from facade.limits import (
    WINDOW_S,
    BudgetLevels,
    KeyLimits,
    Lease,
    Limiter,
    LimitStoreUnavailable,
    RateLimitExceeded,
    budget_levels,
    budget_refusal,
    concurrency_refusal,
    token_charge,
)
from facade.redis_client import STORE_ERRORS, connect, where

log = logging.getLogger(__name__)

# A crashed replica's concurrency slots come back after this long; live leases are re-scored
# three times per TTL, so one missed refresh (a stall, a blip) does not drop them.
LEASE_TTL_S = 15.0
# Redis answers in well under a millisecond on a LAN; past this the request goes on without it.
STORE_TIMEOUT_S = 0.5
# During an outage, how often a request tries Redis again (the others skip it).
RETRY_INTERVAL_S = 1.0

# Script results (the first element).
_OVER_BUDGET, _ADMITTED, _OVER_CONCURRENCY = 0, 1, 2

# Shared by the scripts: the clock, and loading and storing the buckets. ARGV[1] is the time
# to use, empty for Redis TIME (tests pass a fake clock, as they do to InMemoryLimiter).
# Numbers are written with %.17g: Redis would otherwise format them with 14 digits.
_PRELUDE = """
local function fmt(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])

-- The refilled levels; full where the hash is missing or holds other limits.
local function load_buckets(key, rpm, tpm)
  local s = redis.call('HMGET', key, 'rpm', 'tpm', 'rq', 'tk', 'ts')
  if tonumber(s[1]) ~= rpm or tonumber(s[2]) ~= tpm then return rpm, tpm end
  local elapsed = math.max(0, now - tonumber(s[5]))
  return math.min(rpm, tonumber(s[3]) + elapsed * rpm / window),
         math.min(tpm, tonumber(s[4]) + elapsed * tpm / window)
end

-- Kept until both buckets would be full again, when a missing hash means the same.
local function store_buckets(key, rpm, tpm, rq, tk)
  redis.call('HSET', key, 'rpm', rpm, 'tpm', tpm, 'rq', fmt(rq), 'tk', fmt(tk), 'ts', fmt(now))
  local full_in = 0
  if rpm > 0 then full_in = math.max(full_in, (rpm - rq) * window / rpm) end
  if tpm > 0 then full_in = math.max(full_in, (tpm - tk) * window / tpm) end
  redis.call('PEXPIRE', key, math.ceil(full_in * 1000) + 1000)
end

local function hold_lease(key, lease, ttl)
  redis.call('ZADD', key, fmt(now + ttl), lease)
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
end
"""

# KEYS: buckets, leases. ARGV: now, window, rpm, tpm, max_concurrent, charge, lease, ttl.
_ACQUIRE = (
    _PRELUDE
    + """
local rpm, tpm, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local charge, lease, ttl = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local rq, tk = load_buckets(KEYS[1], rpm, tpm)
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
  if redis.call('ZCARD', KEYS[2]) >= most then return {2, fmt(rq), fmt(tk)} end
end
if rpm > 0 or tpm > 0 then
  if (rpm > 0 and rq < 1) or (tpm > 0 and tk < charge) then return {0, fmt(rq), fmt(tk)} end
  if rpm > 0 then rq = rq - 1 end
  tk = tk - charge
  store_buckets(KEYS[1], rpm, tpm, rq, tk)
end
if most > 0 then hold_lease(KEYS[2], lease, ttl) end
return {1, fmt(rq), fmt(tk)}
"""
)

# KEYS: buckets, leases. ARGV: now, window, lease, correction, rpm, tpm. The correction goes
# to the buckets as they are now (limits edited since admission included), as in memory.
_RELEASE = (
    _PRELUDE
    + """
redis.call('ZREM', KEYS[2], ARGV[3])
local correction = tonumber(ARGV[4])
if correction ~= 0 then
  local s = redis.call('HMGET', KEYS[1], 'rpm', 'tpm')
  local rpm = tonumber(s[1]) or tonumber(ARGV[5])
  local tpm = tonumber(s[2]) or tonumber(ARGV[6])
  if tpm > 0 then
    local rq, tk = load_buckets(KEYS[1], rpm, tpm)
    store_buckets(KEYS[1], rpm, tpm, rq, tk - correction)
  end
end
return 1
"""
)

# KEYS: leases. ARGV: now, window, ttl, lease ids. XX: a lease released meanwhile stays gone.
_REFRESH = (
    _PRELUDE
    + """
local expiry = fmt(now + tonumber(ARGV[3]))
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return 1
"""
)

# What "Redis cannot be reached" looks like: its own errors, a socket error, our timeout.


class _Outage:
    """Whether the store is down: logs each outage once, and spaces out the retries."""

    def __init__(self, where: str, retry_interval_s: float, clock: Callable[[], float]) -> None:
        self.where = where
        self.retry_interval_s = retry_interval_s
        self.clock = clock
        self.down = False
        self._next_try = 0.0

    def may_try(self) -> bool:
        """False while down, except for one caller per retry interval."""
        if not self.down:
            return True
        now = self.clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_interval_s
        return True

    def failed(self, error: BaseException, policy: str) -> None:
        if not self.down:
            self.down = True
            self._next_try = self.clock() + self.retry_interval_s
            reason = f"{type(error).__name__}: {error}".rstrip(": ")
            log.warning(
                "Redis at %s is unreachable (%s): %s until it is back", self.where, reason, policy
            )

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis at %s is reachable again: limits are shared again", self.where)


def _keys(name: str) -> list[str]:
    """The key's buckets hash and lease set; `{name}` keeps both in one Cluster slot."""
    return [f"tc:rl:{{{name}}}", f"tc:cc:{{{name}}}"]


class _StoreDown(Exception):
    """A store call failed or was skipped during an outage."""


class _NoLease(Lease):
    """Admitted without the store (unlimited, or fail-open): nothing to give back."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0)

    async def _give_back(self, correction: int | None) -> None:
        return None


class _RedisLease(Lease):
    __slots__ = ("_id", "_key", "_limiter", "_limits")

    def __init__(
        self,
        limiter: RedisLimiter,
        key: str,
        lease_id: str,
        limits: KeyLimits,
        charged: int,
        levels: BudgetLevels | None,
    ) -> None:
        super().__init__(charged, levels)
        self._limiter = limiter
        self._key = key
        self._id = lease_id
        self._limits = limits

    async def _give_back(self, correction: int | None) -> None:
        await self._limiter._release(self._key, self._id, self._limits, correction or 0)


class RedisLimiter(Limiter):
    """`Limiter` whose budgets and concurrency slots live in Redis, shared by every replica."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        fail_open: bool = True,
        lease_ttl_s: float = LEASE_TTL_S,
        timeout_s: float = STORE_TIMEOUT_S,
        retry_interval_s: float = RETRY_INTERVAL_S,
        on_store_error: Callable[[str], None] = lambda operation: None,
        clock: Callable[[], float] | None = None,
        where: str = "",
    ) -> None:
        """`clock`: a fake time for tests, sent to the scripts; None (production): Redis TIME."""
        self._client = client
        self.fail_open = fail_open
        self.lease_ttl_s = lease_ttl_s
        self.timeout_s = timeout_s
        self._on_store_error = on_store_error
        self._clock = clock
        self._outage = _Outage(where or "the configured URL", retry_interval_s, time.monotonic)
        self._acquire_script = client.register_script(_ACQUIRE)
        self._release_script = client.register_script(_RELEASE)
        self._refresh_script = client.register_script(_REFRESH)
        # Leases that hold a concurrency slot, by key: re-scored while their requests run.
        self._live: dict[str, set[str]] = {}
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisLimiter:
        client = connect(url, options.get("timeout_s", STORE_TIMEOUT_S))
        return cls(client, where=where(url), **options)

    async def acquire(self, key: str, limits: KeyLimits, estimated_tokens: int) -> Lease:
        if not (limits.requests_per_minute or limits.tokens_per_minute or limits.max_concurrent):
            return _NoLease()  # unlimited: no need to ask anyone
        charge = token_charge(limits, estimated_tokens)
        lease_id = random_hex()
        args = [
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.max_concurrent,
            charge,
            lease_id,
            self.lease_ttl_s,
        ]
        try:
            result = await self._run("acquire", self._acquire_script, _keys(key), args)
        except _StoreDown:
            if self.fail_open:
                return _NoLease()
            raise LimitStoreUnavailable(
                "Rate limits cannot be checked right now; please retry shortly."
            ) from None
        status, requests_level, tokens_level = int(result[0]), float(result[1]), float(result[2])
        levels = budget_levels(limits, requests_level, tokens_level)
        if status == _OVER_CONCURRENCY:
            raise concurrency_refusal(limits, levels)
        if status == _OVER_BUDGET:
            refusal = budget_refusal(limits, requests_level, tokens_level, charge)
            # The script refused on the same comparison of the same numbers (%.17g is exact).
            raise refusal or RateLimitExceeded("Rate limit reached.", 1.0, levels)
        if limits.max_concurrent:
            self._live.setdefault(key, set()).add(lease_id)
            self._start_refresher()
        return _RedisLease(self, key, lease_id, limits, charge, levels)

    async def _release(self, key: str, lease_id: str, limits: KeyLimits, correction: int) -> None:
        held = self._live.get(key)
        holds_slot = held is not None and lease_id in held
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._live[key]
        if not holds_slot and not (correction and limits.tokens_per_minute):
            return
        args = [lease_id, correction, limits.requests_per_minute, limits.tokens_per_minute]
        # Never raised to the request: a lost release costs at most the lease TTL and one
        # uncorrected estimate.
        with contextlib.suppress(_StoreDown):
            await self._run("release", self._release_script, _keys(key), args)

    async def _run(
        self, operation: str, script: Any, keys: Sequence[str], args: Sequence[object]
    ) -> Any:
        """One script call under the timeout, with the outage bookkeeping."""
        if not self._outage.may_try():
            self._on_store_error(operation)
            raise _StoreDown
        now = "" if self._clock is None else repr(self._clock())
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await script(keys=keys, args=[now, WINDOW_S, *args])
        except STORE_ERRORS as error:
            self._on_store_error(operation)
            policy = "admitting requests unlimited" if self.fail_open else "refusing requests"
            self._outage.failed(error, policy)
            raise _StoreDown from error
        self._outage.succeeded()
        return result

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_forever(), name="lease-refresh")

    async def _refresh_forever(self) -> None:
        while self._live:
            await asyncio.sleep(self.lease_ttl_s / 3)
            await self.refresh()

    async def refresh(self) -> None:
        """Push back the expiry of every lease this process holds (one script per key)."""
        for key, leases in list(self._live.items()):
            with contextlib.suppress(_StoreDown):
                leases_key = _keys(key)[1:]
                await self._run(
                    "refresh", self._refresh_script, leases_key, [self.lease_ttl_s, *leases]
                )

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._client.aclose()
