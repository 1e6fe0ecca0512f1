"""Per-key budgets: requests/min, tokens/min and concurrent requests, with Retry-After.

The facade asks a `Limiter` for a `Lease` before it starts an RPC and releases the lease
when the request ends, reporting the tokens it really used. Two implementations:

- `InMemoryLimiter` (here, the default) keeps the counters in this process, which is exact
  for one facade replica.
- `RedisLimiter` (facade/limits_redis.py, with TENSORCHAT_REDIS_URL) shares them between
  replicas, which otherwise each grant the full budget: Lua scripts refill and charge the
  buckets atomically on Redis' clock, and concurrency slots are leases with an expiry that
  a live request refreshes, so a crashed replica holds nothing longer than the lease TTL.

Both follow the rules below, which live only here: the window (`WINDOW_S`), what a request
is charged (`token_charge`), when it must wait and for how long (`budget_refusal`) and the
refusal messages. The Lua script repeats only the bucket arithmetic, on the constants it is
given, and tests/unit/facade/limit_scenarios.py runs one scenario table against both.

Tokens are charged up front from an estimate (prompt characters / 4 plus max_tokens for
each choice; the facade has no tokenizer) and corrected when the request ends with the
usage the inference service reports, so a key can go briefly into debt and then waits.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

# Budgets are per minute, refilled continuously over this window.
WINDOW_S = 60.0
# When a concurrency slot frees is unknown; one second is a polite first backoff.
CONCURRENCY_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's budget; 0 means unlimited."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent: int = 0


@dataclass(frozen=True, slots=True)
class BudgetLevels:
    """A key's two rate buckets as admission left them (or as they stood at a refusal).

    What the x-ratelimit-* response headers report (facade/ratelimit_headers.py); a level
    is meaningless, and not reported, where its limit is 0 (unlimited).
    """

    limits: KeyLimits
    requests: float
    tokens: float


def budget_levels(limits: KeyLimits, requests: float, tokens: float) -> BudgetLevels | None:
    """The levels to report, or None for a key without a request or token budget."""
    if not (limits.requests_per_minute or limits.tokens_per_minute):
        return None
    return BudgetLevels(limits, requests, tokens)


class RateLimitExceeded(Exception):
    """The key is over one of its budgets; retry after `retry_after_s` seconds."""

    def __init__(
        self, message: str, retry_after_s: float, levels: BudgetLevels | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.levels = levels


class LimitStoreUnavailable(Exception):
    """The shared limits store cannot be reached and the limiter fails closed (a 503)."""


class Lease(ABC):
    """One admitted request, charged `charged` tokens; released when the request ends.

    `levels`: the key's buckets right after this admission (None: no rate budget, or the
    limits could not be checked), which the response reports in its x-ratelimit-* headers.
    """

    __slots__ = ("_released", "charged", "levels")

    def __init__(self, charged: int, levels: BudgetLevels | None = None) -> None:
        self.charged = charged
        self.levels = levels
        self._released = False

    async def release(self, tokens_used: int | None) -> None:
        """Free the concurrency slot and correct the token charge (None: keep the estimate).

        Only the first call counts, so a second release never frees a second slot.
        """
        if self._released:
            return
        self._released = True
        await self._give_back(None if tokens_used is None else tokens_used - self.charged)

    @abstractmethod
    async def _give_back(self, correction: int | None) -> None:
        """Free the slot; add `correction` tokens to the key's charge (None: no correction)."""


class Limiter(ABC):
    """Admission control per key: in memory (here) or shared through Redis (limits_redis)."""

    @abstractmethod
    async def acquire(self, key: str, limits: KeyLimits, estimated_tokens: int) -> Lease:
        """Admit one request or raise RateLimitExceeded; nothing is charged on refusal."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Give back connections and background tasks (the app's shutdown)."""


def token_charge(limits: KeyLimits, estimated_tokens: int) -> int:
    """What admission charges the token budget.

    A single request larger than the whole budget is charged the budget, so it runs once
    the bucket is full instead of never.
    """
    if not limits.tokens_per_minute:
        return 0
    return min(estimated_tokens, limits.tokens_per_minute)


def seconds_until(capacity: float, level: float, amount: float) -> float:
    """Seconds until a bucket of `capacity` per window at `level` holds `amount` (0: now)."""
    missing = amount - level
    return 0.0 if missing <= 0 else missing / (capacity / WINDOW_S)


def budget_refusal(
    limits: KeyLimits, requests_level: float, tokens_level: float, charge: int
) -> RateLimitExceeded | None:
    """The refusal for buckets at these (refilled) levels, or None if the request fits.

    A level is ignored where its limit is 0 (unlimited). The longest wait wins, so a client
    that obeys Retry-After is admitted.
    """
    waits: list[tuple[float, str, int]] = []
    if limits.requests_per_minute:
        rpm = limits.requests_per_minute
        waits.append((seconds_until(rpm, requests_level, 1.0), "requests", rpm))
    if limits.tokens_per_minute:
        tpm = limits.tokens_per_minute
        waits.append((seconds_until(tpm, tokens_level, charge), "tokens", tpm))
    wait, what, limit = max(waits, default=(0.0, "", 0))
    if wait <= 0:
        return None
    return RateLimitExceeded(
        f"Rate limit reached for {what} per minute (limit {limit}). "
        f"Please try again in {math.ceil(wait)}s.",
        wait,
        budget_levels(limits, requests_level, tokens_level),
    )


def concurrency_refusal(limits: KeyLimits, levels: BudgetLevels | None) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"Too many concurrent requests for this key (limit {limits.max_concurrent}).",
        CONCURRENCY_RETRY_S,
        levels,
    )


@dataclass(slots=True)
class TokenBucket:
    """`capacity` units per window, refilled continuously; the level may go negative (debt)."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / WINDOW_S
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        return seconds_until(self.capacity, self.level, amount)


@dataclass(slots=True)
class _KeyState:
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None
    active: int = 0
    limits: KeyLimits = field(default_factory=KeyLimits)


class _MemoryLease(Lease):
    __slots__ = ("_clock", "_state")

    def __init__(
        self,
        clock: Callable[[], float],
        state: _KeyState,
        charged: int,
        levels: BudgetLevels | None,
    ) -> None:
        super().__init__(charged, levels)
        self._clock = clock
        self._state = state

    async def _give_back(self, correction: int | None) -> None:
        self._state.active -= 1
        bucket = self._state.tokens
        if bucket is not None and correction is not None:
            bucket.refill(self._clock())
            bucket.level -= correction


class InMemoryLimiter(Limiter):
    """Token buckets and a concurrency counter per key, in this process (one replica)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: str, limits: KeyLimits, now: float) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        if state.limits != limits:
            # New key, or its limits changed (keys file edited): start from full buckets.
            # The same object is kept so that leases already out still balance `active`.
            state.limits = limits
            rpm, tpm = float(limits.requests_per_minute), float(limits.tokens_per_minute)
            state.requests = TokenBucket(rpm, rpm, now) if rpm else None
            state.tokens = TokenBucket(tpm, tpm, now) if tpm else None
        return state

    async def acquire(self, key: str, limits: KeyLimits, estimated_tokens: int) -> Lease:
        now = self.clock()
        state = self._state(key, limits, now)
        for bucket in (state.requests, state.tokens):
            if bucket is not None:
                bucket.refill(now)
        if limits.max_concurrent and state.active >= limits.max_concurrent:
            raise concurrency_refusal(limits, self._levels(state))
        charge = token_charge(limits, estimated_tokens)
        refusal = budget_refusal(limits, *self._levels_of(state), charge)
        if refusal is not None:
            raise refusal
        if state.requests is not None:
            state.requests.level -= 1.0
        if state.tokens is not None:
            state.tokens.level -= charge
        state.active += 1
        return _MemoryLease(self.clock, state, charge, self._levels(state))

    @staticmethod
    def _levels_of(state: _KeyState) -> tuple[float, float]:
        return (
            state.requests.level if state.requests else 0.0,
            state.tokens.level if state.tokens else 0.0,
        )

    def _levels(self, state: _KeyState) -> BudgetLevels | None:
        return budget_levels(state.limits, *self._levels_of(state))


class ConcurrencyGate:
    """A whole-facade cap on in-flight requests (0: none), so overload is a fast 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.limit and self.active >= self.limit:
            raise RateLimitExceeded("The server is at capacity; please retry shortly.", 1.0)
        self.active += 1

    def exit(self) -> None:
        self.active -= 1


def estimate_tokens(prompt_chars: int, max_tokens: int | None, n: int) -> int:
    """Admission estimate without a tokenizer: ~4 characters a token, plus the completion cap."""
    return math.ceil(prompt_chars / 4) + (max_tokens or 0) * n
