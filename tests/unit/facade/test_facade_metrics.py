"""The facade's metrics: cached children are the families' own, made on first use only."""

from __future__ import annotations

from facade.metrics import FacadeMetrics


def test_cached_children_are_the_families_own_and_made_on_first_use() -> None:
    metrics = FacadeMetrics()
    assert b'model="m"' not in metrics.render()
    child = metrics.ttft_by("m")
    assert child is metrics.ttft.labels("m")
    assert metrics.ttft_by("m") is child
    child.observe(0.2)
    text = metrics.render().decode()
    assert 'tensorchat_facade_time_to_first_token_seconds_count{model="m"} 1.0' in text
    # Only the series used so far exist, as with .labels() each time.
    assert 'model="m",stream=' not in text
    metrics.requests_by("/v1/chat/completions", "200").inc()
    metrics.requests_by("/v1/chat/completions", "200").inc()
    assert (
        'tensorchat_facade_requests_total{route="/v1/chat/completions",status="200"} 2.0'
        in metrics.render().decode()
    )
