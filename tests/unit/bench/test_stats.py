"""Percentiles and the run summary, checked against values computed by hand and by numpy."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tensorchat.bench.stats import Distribution, RequestResult, percentile, summarize


def test_percentile_matches_numpy_linear_interpolation() -> None:
    rng = random.Random(3)
    for size in (1, 2, 3, 10, 101, 1000):
        data = sorted(rng.random() for _ in range(size))
        for p in (0, 1, 50, 90, 99, 99.9, 100):
            assert percentile(data, p) == pytest.approx(float(np.percentile(data, p)))


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))
    assert Distribution.of([]).count == 0
    assert Distribution.of([]).to_json()["p50"] is None


def streamed(start: float, ttft: float, gaps: list[float], tokens: int) -> RequestResult:
    times = [start + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    return RequestResult(
        start=start,
        end=times[-1] + 0.001,
        ok=True,
        ttft=ttft,
        chunk_times=times,
        chunk_sizes=[1] * len(times),
        sizes_are_tokens=True,
        output_tokens=tokens,
    )


def test_summary_figures() -> None:
    a = streamed(10.0, 0.1, [0.01, 0.02, 0.03], 4)
    b = streamed(10.5, 0.3, [0.05], 2)
    failed = RequestResult(start=10.2, end=10.4, error="http_429")
    s = summarize([a, b, failed])
    assert (s.requests, s.completed) == (3, 2)
    assert s.errors == {"http_429": 1}
    duration = b.end - 10.0
    assert s.duration_s == pytest.approx(duration)
    assert s.output_throughput == pytest.approx(6 / duration)
    assert s.request_throughput == pytest.approx(2 / duration)
    assert s.ttft_ms.mean == pytest.approx(200.0)
    assert s.ttft_ms.p(50) == pytest.approx(200.0)
    # Gaps 10, 20, 30 ms (a) and 50 ms (b).
    assert s.itl_ms.p(50) == pytest.approx(25.0)
    assert s.itl_ms.count == 4
    assert s.itl_ms.mean == pytest.approx(27.5)
    assert s.itl_ms.max == pytest.approx(50.0)
    # TPOT: (latency - ttft) / (tokens - 1) per request.
    tpot_a = (a.latency - 0.1) / 3 * 1000
    tpot_b = (b.latency - 0.3) / 1 * 1000
    assert s.tpot_ms.mean == pytest.approx((tpot_a + tpot_b) / 2)
    assert s.mean_tokens_per_message == pytest.approx(6 / 6)


def test_token_times_scales_characters_to_usage_tokens() -> None:
    r = RequestResult(
        start=0.0, ok=True, chunk_times=[1.0, 2.0], chunk_sizes=[3, 9], output_tokens=8
    )
    assert r.token_times() == [(1.0, 2.0), (2.0, 6.0)]
    grpc = RequestResult(
        start=0.0, chunk_times=[1.0, 2.0], chunk_sizes=[1, 4], sizes_are_tokens=True
    )
    assert grpc.token_times() == [(1.0, 1.0), (2.0, 4.0)]
