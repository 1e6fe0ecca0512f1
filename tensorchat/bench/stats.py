"""Per-request measurements and their summary: throughput, TTFT, ITL, TPOT, latency, errors.

Definitions (the ones vLLM's and trtllm-bench's serving benchmarks use):
- TTFT: from sending the request to the first message carrying output (text or tokens).
- ITL: the gap between two consecutive messages carrying output, over all requests. When the
  server coalesces several tokens into one message that is one (longer) gap.
- TPOT: per request, (latency - TTFT) / (output tokens - 1); its distribution over requests.
- Latency: from sending the request to its last byte.
Times are `time.monotonic()`: on Linux one system-wide clock, so the numbers of several
client processes (and of a server on the same machine) can be compared.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(slots=True)
class RequestResult:
    """What one request did, as seen by the client."""

    start: float
    end: float = 0.0
    ok: bool = False
    # Error kind ("http_429", "grpc_UNAVAILABLE", "ReadTimeout", "incomplete", ...) or None.
    error: str | None = None
    ttft: float | None = None
    # Arrival time of each message that carried output (absolute, time.monotonic()).
    chunk_times: list[float] = field(default_factory=list)
    # Size of each such message: tokens where the protocol says (gRPC), else characters.
    chunk_sizes: list[int] = field(default_factory=list)
    sizes_are_tokens: bool = False
    output_tokens: int = 0
    prompt_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    def token_times(self) -> list[tuple[float, float]]:
        """(arrival time, tokens) per output message; character counts scaled to tokens."""
        if self.sizes_are_tokens or not self.chunk_sizes:
            return list(zip(self.chunk_times, map(float, self.chunk_sizes), strict=True))
        chars = sum(self.chunk_sizes)
        if chars == 0:
            # Output without text (e.g. only tool-call deltas): spread tokens evenly.
            each = self.output_tokens / len(self.chunk_times)
            return [(t, each) for t in self.chunk_times]
        scale = self.output_tokens / chars
        return [(t, s * scale) for t, s in zip(self.chunk_times, self.chunk_sizes, strict=True)]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of already sorted values, interpolated like numpy's default."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean and percentiles of a sample, in milliseconds where it holds times."""

    count: int
    mean: float
    percentiles: dict[float, float]
    max: float

    @classmethod
    def of(cls, values: Iterable[float], scale: float = 1.0) -> Distribution:
        data = sorted(v * scale for v in values)
        if not data:
            return cls(0, math.nan, {p: math.nan for p in PERCENTILES}, math.nan)
        return cls(
            count=len(data),
            mean=math.fsum(data) / len(data),
            percentiles={p: percentile(data, p) for p in PERCENTILES},
            max=data[-1],
        )

    def p(self, q: float) -> float:
        return self.percentiles[q]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "mean": _finite(self.mean)}
        for q, v in self.percentiles.items():
            out[f"p{q:g}"] = _finite(v)
        out["max"] = _finite(self.max)
        return out


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures one benchmark run reports."""

    requests: int
    completed: int
    errors: dict[str, int]
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_output_tokens: int
    total_prompt_tokens: int | None
    ttft_ms: Distribution
    itl_ms: Distribution
    tpot_ms: Distribution
    latency_ms: Distribution
    mean_tokens_per_message: float

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "errors": dict(self.errors),
            "duration_s": round(self.duration_s, 4),
            "request_throughput": round(self.request_throughput, 4),
            "output_throughput": round(self.output_throughput, 2),
            "total_output_tokens": self.total_output_tokens,
            "total_prompt_tokens": self.total_prompt_tokens,
            "mean_tokens_per_message": round(self.mean_tokens_per_message, 4),
            "ttft_ms": self.ttft_ms.to_json(),
            "itl_ms": self.itl_ms.to_json(),
            "tpot_ms": self.tpot_ms.to_json(),
            "latency_ms": self.latency_ms.to_json(),
        }


def summarize(results: Sequence[RequestResult]) -> Summary:
    """Aggregate request results; throughput is over the span from first send to last end."""
    ok = [r for r in results if r.ok]
    errors = Counter(r.error or "unknown" for r in results if not r.ok)
    duration = max(r.end for r in results) - min(r.start for r in results) if results else 0.0
    out_tokens = sum(r.output_tokens for r in ok)
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    itl: list[float] = []
    tpot: list[float] = []
    messages = 0
    for r in ok:
        times = r.chunk_times
        messages += len(times)
        itl.extend(b - a for a, b in itertools.pairwise(times))
        if r.ttft is not None and r.output_tokens > 1:
            tpot.append((r.latency - r.ttft) / (r.output_tokens - 1))
    return Summary(
        requests=len(results),
        completed=len(ok),
        errors=dict(sorted(errors.items())),
        duration_s=duration,
        request_throughput=len(ok) / duration if duration > 0 else math.nan,
        output_throughput=out_tokens / duration if duration > 0 else math.nan,
        total_output_tokens=out_tokens,
        total_prompt_tokens=sum(prompt) if prompt else None,
        ttft_ms=Distribution.of((r.ttft for r in ok if r.ttft is not None), 1000.0),
        itl_ms=Distribution.of(itl, 1000.0),
        tpot_ms=Distribution.of(tpot, 1000.0),
        latency_ms=Distribution.of((r.latency for r in ok), 1000.0),
        mean_tokens_per_message=out_tokens / messages if messages else math.nan,
    )
