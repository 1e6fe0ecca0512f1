"""The x-ratelimit-* response headers, as OpenAI sends them, from a key's bucket levels.

OpenAI's API reports, on each response, the limit, what remains and when the budget is full
again ("reset"), for requests and for tokens (https://platform.openai.com/docs/guides/
rate-limits, "Rate limits in headers"): `x-ratelimit-limit-requests: 60`,
`x-ratelimit-remaining-requests: 59`, `x-ratelimit-reset-requests: 1s`, and the same with
`-tokens`; the reset is a Go-style duration ("6m0s", "1.5s", "200ms"). Only the budgets a
key has are reported: a key with no token budget gets no token headers.
"""

from __future__ import annotations

import math

from facade.limits import BudgetLevels, seconds_until


def rate_limit_headers(levels: BudgetLevels | None) -> dict[str, str]:
    """The headers for a key's levels; none for a key without rate budgets."""
    if levels is None:
        return {}
    headers: dict[str, str] = {}
    budgets = (
        ("requests", levels.limits.requests_per_minute, levels.requests),
        ("tokens", levels.limits.tokens_per_minute, levels.tokens),
    )
    for what, limit, level in budgets:
        if not limit:
            continue
        headers[f"x-ratelimit-limit-{what}"] = str(limit)
        # A key in debt (a request used more tokens than estimated) has nothing left, not less.
        headers[f"x-ratelimit-remaining-{what}"] = str(max(0, math.floor(level)))
        headers[f"x-ratelimit-reset-{what}"] = go_duration(seconds_until(limit, level, limit))
    return headers


def go_duration(seconds: float) -> str:
    """`seconds` as Go's time.Duration prints it, to the millisecond: "6m0s", "1.5s", "200ms".

    Rounded up, so that a client which waits this long finds the budget full.
    """
    millis = math.ceil(round(seconds * 1000, 6))  # round(): 0.1 * 1000 is 100.00000000000001
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, millis = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{millis // 1000}.{millis % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
