"""Prometheus metrics of the facade: requests by status, time to first token, latency, tokens.

Each app owns its registry (several apps in one process, as in tests, never clash), and
everything is recorded once per request, never per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from facade.auth import KeyRing

# Seconds; TTFT includes the queue and prefill on the inference side.
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class FacadeMetrics:
    """The facade's metric families, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tensorchat_facade_requests",
            "HTTP requests by route and status (499: the client went away first).",
            ["route", "status"],
            registry=r,
        )
        self.stream_errors = Counter(
            "tensorchat_facade_stream_errors",
            "Streams that failed after the 200 was sent, by the error's status.",
            ["model", "status"],
            registry=r,
        )
        self.retries = Counter(
            "tensorchat_facade_retries",
            "Requests run again on another replica after failing before reaching their client.",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "tensorchat_facade_time_to_first_token_seconds",
            "From the request's arrival to its first generated text.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "tensorchat_facade_request_duration_seconds",
            "Chat completion requests, arrival to last byte.",
            ["model", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tensorchat_facade_prompt_tokens",
            "Prompt tokens of completed requests.",
            ["model"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "tensorchat_facade_completion_tokens",
            "Generated tokens of completed requests.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tensorchat_facade_in_flight_requests", "Chat requests being served.", registry=r
        )
        self.backend_up = Gauge(
            "tensorchat_facade_backend_up",
            "1 when the inference target is in routing: it answered its last probe, or it is "
            "busy (slow to answer, but still sending on its streams).",
            ["target"],
            registry=r,
        )
        self.rate_limited = Counter(
            "tensorchat_facade_rate_limited",
            "Requests refused with 429 by the facade's own limits.",
            ["key"],
            registry=r,
        )
        self.limit_store_errors = Counter(
            "tensorchat_facade_limit_store_errors",
            "Calls to the shared limits store (Redis) that failed or were skipped during an "
            "outage, by operation (acquire, release, refresh).",
            ["operation"],
            registry=r,
        )

    def watch_keys(self, keyring: KeyRing) -> None:
        """Export the keys file's reload state, read from `keyring` at each scrape."""
        self.registry.register(KeysReloadCollector(keyring))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class KeysReloadCollector(Collector):
    """When the keys file was last loaded, and how many versions of it were refused.

    Alert on the failures, or on a timestamp older than the last change you made: either
    means revocations are not taking effect.
    """

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tensorchat_facade_keys_last_reload_timestamp_seconds",
            "Unix time of the last successful load of the keys file (0: none yet).",
            value=self.keyring.last_reload_at or 0.0,
        )
        yield CounterMetricFamily(
            "tensorchat_facade_keys_reload_failures",
            "Versions of the keys file refused (bad content or unreadable); the last good "
            "keys stayed in force.",
            value=self.keyring.reload_failures,
        )
