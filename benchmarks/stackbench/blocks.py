"""Blocks of the request-CPU benchmark: one phase's load on one point, its figures, medians.

A block is one measured run of a phase (short requests, streams, ...) against one point (the
floor, a stack's facade, a stack's service over gRPC). Its figures are flat numbers: CPU µs
per request of each process (`facade_us`, `inference_us`, `floor_us`, `client_us`), the
same per token (`..._us_per_token`) and what the client saw (events per stream, TTFT, ITL).
A run's summary is the median of each figure over its rounds; `errors` is summed instead,
so that one failed request anywhere stays visible.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tensorchat.bench.stats import Distribution, RequestResult

# phase -> point -> figure -> median over the point's blocks of that phase
Summary = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Block:
    phase: str
    round: int
    point: str
    figures: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "round": self.round,
            "point": self.point,
            "figures": {k: _rounded(v) for k, v in self.figures.items()},
        }


def client_figures(results: Sequence[RequestResult]) -> dict[str, float]:
    """What the client saw: requests, errors, tokens, events per stream, TTFT, ITL, latency."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    events = sum(len(r.chunk_times) for r in ok)
    gaps = [b - a for r in ok for a, b in itertools.pairwise(r.chunk_times)]
    ttft = Distribution.of((r.ttft for r in ok if r.ttft is not None), 1000.0)
    itl = Distribution.of(gaps, 1000.0)
    latency = Distribution.of((r.latency for r in ok), 1000.0)
    return {
        "requests": float(len(results)),
        "errors": float(len(results) - len(ok)),
        "tokens_per_request": tokens / len(ok) if ok else math.nan,
        "events_per_stream": events / len(ok) if ok and events else math.nan,
        "tokens_per_event": tokens / events if events else math.nan,
        "ttft_p50_ms": ttft.p(50.0),
        "ttft_p99_ms": ttft.p(99.0),
        "itl_p50_ms": itl.p(50.0),
        "itl_p99_ms": itl.p(99.0),
        "latency_p50_ms": latency.p(50.0),
    }


def cpu_figures(us_per_request: Mapping[str, float], tokens_per_request: float) -> dict[str, float]:
    """`{role}_us` (per request or stream) and `{role}_us_per_token` for each process."""
    out: dict[str, float] = {}
    for role, us in us_per_request.items():
        out[f"{role}_us"] = us
        out[f"{role}_us_per_token"] = us / tokens_per_request if tokens_per_request else math.nan
    return out


def medians(blocks: Sequence[Block]) -> Summary:
    """Each figure's median over the rounds of each (phase, point); NaNs left out."""
    grouped: dict[str, dict[str, list[Block]]] = {}
    for block in blocks:
        grouped.setdefault(block.phase, {}).setdefault(block.point, []).append(block)
    summary: Summary = {}
    for phase, points in grouped.items():
        for point, group in points.items():
            names = dict.fromkeys(name for b in group for name in b.figures)
            figures: dict[str, float] = {}
            for name in names:
                values = [b.figures.get(name, math.nan) for b in group]
                if name == "errors":
                    figures[name] = math.fsum(v for v in values if not math.isnan(v))
                    continue
                finite = [v for v in values if not math.isnan(v)]
                figures[name] = statistics.median(finite) if finite else math.nan
            summary.setdefault(phase, {})[point] = figures
    return summary


def versus(summary: Summary, after: str, before: str) -> dict[str, dict[str, float]]:
    """after / before for each CPU figure both points have, per phase: the paired
    before/after of every cost, measured in the same minutes."""
    out: dict[str, dict[str, float]] = {}
    for phase, points in summary.items():
        if after not in points or before not in points:
            continue
        a, b = points[after], points[before]
        # Per request where the phase has them; per token it is the same ratio, since both
        # points ran the same requests. Delivery runs for a time and has only per token.
        unit = "_us" if any(name.endswith("_us") for name in a) else "_us_per_token"
        out[phase] = {
            name: a[name] / b[name] if b[name] else math.nan
            for name in a
            if name in b and name.endswith(unit)
        }
    return out


def summary_to_json(summary: Summary) -> dict[str, Any]:
    return {
        phase: {p: {k: _rounded(v) for k, v in f.items()} for p, f in points.items()}
        for phase, points in summary.items()
    }


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)
