"""Per-key budgets: requests/min, tokens/min and concurrent requests, with Retry-After.

The facade asks a `Limiter` for a `Lease` before it starts an RPC and releases the lease
when the request ends, reporting the tokens it really used. `InMemoryLimiter` keeps the
counters in this process, which is exact for one facade replica.

Several replicas must share the counters, or each replica grants the full budget. The
interface is small on purpose so that a shared implementation can drop in:

- Redis, one hash per key (`tc:rl:{key}`) updated by a Lua script, so check-and-charge is
  atomic: the script refills both token buckets from the stored timestamp (use Redis
  `TIME`, not the replica's clock), refuses or charges, and returns the wait time that
  becomes Retry-After. `release` runs a second script that adds the difference between
  the estimated and the real token count.
- Concurrency as a sorted set per key (`tc:cc:{key}`) of lease ids scored by expiry; a
  replica refreshes its leases while they stream, and `ZREMRANGEBYSCORE` drops leases of a
  replica that died, so a crash never leaks a slot.
- Every call has a short timeout; if the store is unreachable the limiter fails open or
  closed according to configuration (open is the usual choice for paid traffic).

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


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's budget; 0 means unlimited."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent: int = 0


class RateLimitExceeded(Exception):
    """The key is over one of its budgets; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class Lease(ABC):
    """One admitted request; release it exactly once when the request ends."""

    @abstractmethod
    async def release(self, tokens_used: int | None) -> None:
        """Free the concurrency slot and correct the token charge (None: keep the estimate)."""


class Limiter(ABC):
    """Admission control per key; implementations: in memory (here), Redis (see above)."""

    @abstractmethod
    async def acquire(self, key: str, limits: KeyLimits, estimated_tokens: int) -> Lease:
        """Admit one request or raise RateLimitExceeded; nothing is charged on refusal."""


@dataclass(slots=True)
class TokenBucket:
    """`capacity` units per minute, refilled continuously; the level may go negative (debt)."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / (self.capacity / 60.0)


@dataclass(slots=True)
class _KeyState:
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None
    active: int = 0
    limits: KeyLimits = field(default_factory=KeyLimits)


class _MemoryLease(Lease):
    __slots__ = ("_charged", "_clock", "_released", "_state")

    def __init__(self, clock: Callable[[], float], state: _KeyState, charged: int) -> None:
        self._clock = clock
        self._state = state
        self._charged = charged
        self._released = False

    async def release(self, tokens_used: int | None) -> None:
        if self._released:
            return
        self._released = True
        self._state.active -= 1
        bucket = self._state.tokens
        if bucket is not None and tokens_used is not None:
            bucket.refill(self._clock())
            bucket.level -= tokens_used - self._charged


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
        if limits.max_concurrent and state.active >= limits.max_concurrent:
            # When a slot frees is unknown; one second is a polite first backoff.
            raise RateLimitExceeded(
                f"Too many concurrent requests for this key (limit {limits.max_concurrent}).",
                1.0,
            )
        waits: list[tuple[float, str, int]] = []
        if state.requests is not None:
            state.requests.refill(now)
            waits.append((state.requests.wait_for(1.0), "requests", limits.requests_per_minute))
        # A single request larger than the whole budget is charged the budget, so it runs
        # once the bucket is full instead of never.
        charge = 0
        if state.tokens is not None:
            state.tokens.refill(now)
            charge = min(estimated_tokens, int(state.tokens.capacity))
            waits.append((state.tokens.wait_for(charge), "tokens", limits.tokens_per_minute))
        wait, what, limit = max(waits, default=(0.0, "", 0))
        if wait > 0:
            raise RateLimitExceeded(
                f"Rate limit reached for {what} per minute (limit {limit}). "
                f"Please try again in {math.ceil(wait)}s.",
                wait,
            )
        if state.requests is not None:
            state.requests.level -= 1.0
        if state.tokens is not None:
            state.tokens.level -= charge
        state.active += 1
        return _MemoryLease(self.clock, state, charge)


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
