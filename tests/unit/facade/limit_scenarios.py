"""One table of limiter scenarios, played against every `Limiter` (in memory and Redis).

The Redis scripts repeat the bucket arithmetic of facade/limits.py; this table is what keeps
the two the same. Time is a hand-driven clock that both limiters read (the Redis limiter
sends it to its scripts in place of Redis TIME), so refills are exact and instant.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from facade.limits import BudgetLevels, KeyLimits, Lease, Limiter, RateLimitExceeded


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Acquire:
    limits: KeyLimits
    estimate: int = 0
    key: str = "k"
    # None: admitted. Else refused, the message naming "requests", "tokens" or "concurrent".
    refused: str | None = None
    retry_after_s: float | None = None
    # The (requests, tokens) levels the lease or refusal reports for the x-ratelimit-*
    # headers: after the charge when admitted; "none" for a key without rate budgets.
    levels: tuple[float, float] | str | None = None


@dataclass(frozen=True)
class Release:
    lease: int  # the n-th admitted lease
    tokens_used: int | None


@dataclass(frozen=True)
class Wait:
    seconds: float


Step = Acquire | Release | Wait

RPM2 = KeyLimits(requests_per_minute=2)
RPM1 = KeyLimits(requests_per_minute=1)
TPM600 = KeyLimits(tokens_per_minute=600)  # 10 tokens a second
ONE_AT_A_TIME = KeyLimits(max_concurrent=1)

SCENARIOS: dict[str, list[Step]] = {
    "requests per minute refuse, then refill": [
        Acquire(RPM2),
        Release(0, 0),
        Acquire(RPM2),
        Release(1, 0),
        # One request refills every 30 s at 2/min.
        Acquire(RPM2, refused="requests", retry_after_s=30.0),
        Wait(29.0),
        Acquire(RPM2, refused="requests", retry_after_s=1.0),
        Wait(1.0),
        Acquire(RPM2),
    ],
    "keys have separate budgets": [
        Acquire(RPM1, key="a"),
        Acquire(RPM1, key="b"),
        Acquire(RPM1, key="a", refused="requests"),
    ],
    "tokens are charged up front and corrected on release": [
        Acquire(TPM600, estimate=500),
        # 100 left, 100 missing at 10/s.
        Acquire(TPM600, estimate=200, refused="tokens", retry_after_s=10.0),
        Release(0, 100),  # really used 100: 400 come back
        Acquire(TPM600, estimate=200),
    ],
    "an underestimate puts the key in debt": [
        Acquire(TPM600, estimate=100),
        Release(0, 1100),  # 1000 more than charged: the bucket is at -500
        Acquire(TPM600, estimate=1, refused="tokens", retry_after_s=50.1),
    ],
    "a request bigger than the budget still runs on a full bucket": [
        Acquire(KeyLimits(tokens_per_minute=100), estimate=10_000),
        Acquire(KeyLimits(tokens_per_minute=100), estimate=1, refused="tokens", retry_after_s=0.6),
    ],
    "the longest wait wins": [
        Acquire(KeyLimits(requests_per_minute=1, tokens_per_minute=600), estimate=600),
        Acquire(
            KeyLimits(requests_per_minute=1, tokens_per_minute=600),
            estimate=300,
            refused="requests",  # 60 s for a request, 30 s for the tokens
            retry_after_s=60.0,
        ),
    ],
    "a concurrency slot comes back on release, once": [
        Acquire(ONE_AT_A_TIME),
        Acquire(ONE_AT_A_TIME, refused="concurrent", retry_after_s=1.0),
        Release(0, None),
        Release(0, None),  # releasing twice frees one slot, not two
        Acquire(ONE_AT_A_TIME),
        Acquire(ONE_AT_A_TIME, refused="concurrent"),
        Release(1, 5),
        Acquire(ONE_AT_A_TIME),
    ],
    "a refusal charges nothing": [
        Acquire(KeyLimits(requests_per_minute=10, tokens_per_minute=100), estimate=100),
        *[
            Acquire(
                KeyLimits(requests_per_minute=10, tokens_per_minute=100),
                estimate=50,
                refused="tokens",
            )
            for _ in range(5)
        ],
        Wait(30.0),  # 50 tokens back
        Acquire(KeyLimits(requests_per_minute=10, tokens_per_minute=100), estimate=50),
    ],
    "changed limits apply and in-flight leases still balance": [
        Acquire(ONE_AT_A_TIME),
        Acquire(KeyLimits(max_concurrent=2)),
        Acquire(KeyLimits(max_concurrent=2), refused="concurrent"),
        Release(0, 0),
        Release(1, 0),
        Acquire(KeyLimits(max_concurrent=2)),
        Acquire(KeyLimits(max_concurrent=2)),
    ],
    "changed rate limits start from full buckets": [
        Acquire(RPM1),
        Acquire(RPM1, refused="requests"),
        Acquire(RPM2),
        Acquire(RPM2),
        Acquire(RPM2, refused="requests"),
    ],
    "a bucket refills up to its capacity, no further": [
        Acquire(RPM2),
        Wait(10_000.0),
        Acquire(RPM2),
        Acquire(RPM2),
        Acquire(RPM2, refused="requests", retry_after_s=30.0),
    ],
    "an unlimited key is never refused": [Acquire(KeyLimits(), estimate=10**9)] * 50,
    "the levels after each admission and at a refusal are reported": [
        Acquire(KeyLimits(requests_per_minute=2, tokens_per_minute=600), 100, levels=(1, 500)),
        Wait(3.0),  # 0.1 request and 30 tokens back
        Acquire(KeyLimits(requests_per_minute=2, tokens_per_minute=600), 30, levels=(0.1, 500)),
        Acquire(
            KeyLimits(requests_per_minute=2, tokens_per_minute=600),
            refused="requests",
            levels=(0.1, 500),
        ),
    ],
    "a concurrency refusal reports the levels too": [
        Acquire(KeyLimits(requests_per_minute=5, max_concurrent=1), levels=(4, 0)),
        Acquire(
            KeyLimits(requests_per_minute=5, max_concurrent=1), refused="concurrent", levels=(4, 0)
        ),
    ],
    "keys without rate budgets report no levels": [
        Acquire(KeyLimits(), key="free", levels="none"),
        Acquire(ONE_AT_A_TIME, levels="none"),
        Acquire(ONE_AT_A_TIME, refused="concurrent", levels="none"),
    ],
}


def _check_levels(levels: BudgetLevels | None, step: Acquire, where: str) -> None:
    if step.levels == "none":
        assert levels is None, where
    elif step.levels is not None:
        assert levels is not None, where
        assert (levels.requests, levels.tokens) == pytest.approx(step.levels), where


async def play(limiter: Limiter, clock: Clock, steps: list[Step]) -> None:
    """Run the steps, asserting each refusal and admission the table expects."""
    leases: list[Lease] = []
    for number, step in enumerate(steps):
        where = f"step {number}: {step}"
        if isinstance(step, Wait):
            clock.now += step.seconds
        elif isinstance(step, Release):
            await leases[step.lease].release(step.tokens_used)
        elif step.refused is None:
            leases.append(await limiter.acquire(step.key, step.limits, step.estimate))
            _check_levels(leases[-1].levels, step, where)
        else:
            with pytest.raises(RateLimitExceeded) as info:
                await limiter.acquire(step.key, step.limits, step.estimate)
            assert step.refused in info.value.message, where
            _check_levels(info.value.levels, step, where)
            if step.retry_after_s is not None:
                assert info.value.retry_after_s == pytest.approx(step.retry_after_s), where
