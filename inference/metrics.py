"""Prometheus metrics of the inference service, with the meanings and buckets of vLLM's.

Each `vllm:NAME` of vLLM's PrometheusStatLogger (vllm/v1/metrics/loggers.py, read at commit
005a810b) is `tensorchat_inference_NAME` here, with its `model_name` label, so a vLLM dashboard
ports with a rename (docs/observability.md lists the mapping). What each one measures follows
vllm/v1/metrics/stats.py (same commit, IterationStats.update_from_output and
update_from_finished_request), with RequestTimings (inference/engines/base.py) as the clock:

- time to first token: arrival -> first token, observed when it reaches the runner;
- time per output token: the gap between two outputs of a request, per token it brought (vLLM
  observes the gap between engine steps, one token each; our outputs may carry several tokens
  when the reader was paced, so the gap is divided by them);
- queue = arrived -> scheduled, prefill = scheduled -> first token, decode = first -> last
  token, inference = scheduled -> last token, e2e = arrival -> end, each per finished request;
- request_success counts finished choices (vLLM's requests are our choices: it runs n > 1 as n
  child requests) by vLLM's reasons: stop (EOS, stop string or token, tool calls), length, abort
  (cancelled), plus time_limit, which vLLM does not have;
- running, waiting and KV-cache usage are the engine's own (`Engine.stats()`: TensorRT-LLM's
  iteration stats, the torch engine's batch), read at each scrape.

Each server owns its registry (several in one process, as in tests, never clash).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from inference.registry import ServedModel

PREFIX = "tensorchat_inference_"
MODEL_LABEL = "model_name"

# The buckets of vllm/v1/metrics/loggers.py (commit 005a810b), seconds.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def one_two_five_buckets(max_value: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value`: vLLM's build_1_2_5_buckets(max_model_len)."""
    buckets: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > max_value:
                return buckets
            buckets.append(float(value))
        scale *= 10


class InferenceMetrics:
    """The service's metric families; `EngineStatsCollector` adds the engines' gauges."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        self.registry = CollectorRegistry()
        r, labels = self.registry, [MODEL_LABEL]
        # vLLM sizes the length histograms by its one model's context; we serve several.
        longest = max((model.context_length for model in models), default=1)
        lengths = one_two_five_buckets(longest)
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            PREFIX + "generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=r,
        )
        self.request_success = Counter(
            PREFIX + "request_success",
            "Count of successfully processed requests (choices), by finish reason.",
            [MODEL_LABEL, "finished_reason"],
            registry=r,
        )
        self.prompt_length = Histogram(
            PREFIX + "request_prompt_tokens",
            "Number of prefill tokens processed.",
            labels,
            buckets=lengths,
            registry=r,
        )
        self.generation_length = Histogram(
            PREFIX + "request_generation_tokens",
            "Number of generation tokens processed.",
            labels,
            buckets=lengths,
            registry=r,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            PREFIX + "time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        phases = (
            ("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
            ("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request."),
            (
                "request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
            ),
            (
                "request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
            ),
            ("request_decode_time_seconds", "Histogram of time spent in DECODE phase for request."),
        )
        self.e2e, self.queue, self.inference, self.prefill, self.decode = (
            Histogram(PREFIX + name, doc, labels, buckets=REQUEST_LATENCY_BUCKETS, registry=r)
            for name, doc in phases
        )
        self.engine_stalled = Gauge(
            PREFIX + "engine_stalled",
            "1 from when the model's engine has held requests and generated no token for "
            "--engine-stall-s until it generates again (inference.engine_watch), else 0.",
            labels,
            registry=r,
        )
        for model in models:
            self.engine_stalled.labels(model.id).set(0)
        r.register(EngineStatsCollector(models))
        self._models: dict[str, ModelMetrics] = {}

    def model(self, model: str) -> ModelMetrics:
        """`model`'s children of every family (served model ids: a fixed set)."""
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelMetrics(self, model)
        return found


class ModelMetrics:
    """One model's children of the families (what `.labels(model)` returns), looked up once:
    `labels` costs about 1 µs a call (a lock and the label checks) and a request made 11."""

    __slots__ = (
        "_success", "decode", "e2e", "family", "generation_length", "generation_tokens",
        "inference", "model", "prefill", "prompt_length", "prompt_tokens", "queue", "tpot",
        "ttft",
    )  # fmt: skip

    def __init__(self, family: InferenceMetrics, model: str) -> None:
        self.family, self.model = family, model
        self.prompt_tokens: Counter = family.prompt_tokens.labels(model)
        self.generation_tokens: Counter = family.generation_tokens.labels(model)
        self.prompt_length: Histogram = family.prompt_length.labels(model)
        self.generation_length: Histogram = family.generation_length.labels(model)
        self.ttft: Histogram = family.ttft.labels(model)
        self.tpot: Histogram = family.tpot.labels(model)
        self.e2e: Histogram = family.e2e.labels(model)
        self.queue: Histogram = family.queue.labels(model)
        self.inference: Histogram = family.inference.labels(model)
        self.prefill: Histogram = family.prefill.labels(model)
        self.decode: Histogram = family.decode.labels(model)
        self._success: dict[str, Counter] = {}

    def request_success(self, reason: str) -> Counter:
        counter = self._success.get(reason)
        if counter is None:
            counter = self._success[reason] = self.family.request_success.labels(self.model, reason)
        return counter


class EngineStatsCollector(Collector):
    """Running and waiting requests and KV-cache usage per model, from `Engine.stats()`."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self.models = list(models)

    def collect(self) -> Iterator[Metric]:
        running = _gauge("num_requests_running", "Number of requests in model execution batches.")
        waiting = _gauge("num_requests_waiting", "Number of requests waiting to be processed.")
        kv_usage = _gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        engine_tokens = CounterMetricFamily(
            PREFIX + "engine_generated_tokens",
            "Output tokens the engine generated, delivered or not (GetStats' generated_tokens).",
            labels=[MODEL_LABEL],
        )
        for model in self.models:
            stats = model.engine.stats()
            running.add_metric([model.id], stats.active_requests)
            waiting.add_metric([model.id], stats.queued_requests)
            kv_usage.add_metric([model.id], stats.kv_cache_usage)
            engine_tokens.add_metric([model.id], stats.generated_tokens)
        yield from (running, waiting, kv_usage, engine_tokens)


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=[MODEL_LABEL])


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[WSGIServer, threading.Thread]:
    """prometheus-client's own HTTP server for `registry` on host:port (0: a free port)."""
    return start_http_server(port, addr=host, registry=registry)
