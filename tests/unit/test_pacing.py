"""A stream's share of the servicer's message budget."""

from __future__ import annotations

import pytest

from inference.pacing import DEFAULT_MESSAGES_PER_SECOND, stream_interval


def test_streams_share_the_budget_equally() -> None:
    assert stream_interval(256, DEFAULT_MESSAGES_PER_SECOND) == pytest.approx(0.040)
    assert stream_interval(128, DEFAULT_MESSAGES_PER_SECOND) == pytest.approx(0.020)
    # 8 streams get one message per 1.25 ms: faster than any engine makes tokens, so unpaced.
    assert stream_interval(8, DEFAULT_MESSAGES_PER_SECOND) < 0.002


def test_a_budget_of_zero_turns_pacing_off() -> None:
    assert stream_interval(1000, 0.0) == 0.0
