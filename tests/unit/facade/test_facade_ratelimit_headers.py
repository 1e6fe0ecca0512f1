"""The x-ratelimit-* headers built from a key's levels, and OpenAI's duration format."""

from __future__ import annotations

import pytest

from facade.limits import BudgetLevels, KeyLimits
from facade.ratelimit_headers import go_duration, rate_limit_headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (-3.0, "0s"),
        (0.2, "200ms"),
        (0.0004, "1ms"),  # rounded up: waiting this long is enough
        (1.0, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (59.9995, "1m0s"),
        (360.0, "6m0s"),
        (86.4, "1m26.4s"),
        (3600.0, "1h0m0s"),
    ],
)
def test_durations_are_written_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_both_budgets_are_reported_with_limit_remaining_and_time_to_full() -> None:
    limits = KeyLimits(requests_per_minute=60, tokens_per_minute=6000)
    headers = rate_limit_headers(BudgetLevels(limits, requests=59.0, tokens=5000.5))
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "9.995s",
    }


def test_a_key_in_debt_has_nothing_remaining_and_only_its_budgets_are_reported() -> None:
    headers = rate_limit_headers(BudgetLevels(KeyLimits(tokens_per_minute=60), 0.0, -30.0))
    assert headers == {
        "x-ratelimit-limit-tokens": "60",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m30s",
    }
    assert rate_limit_headers(None) == {}
