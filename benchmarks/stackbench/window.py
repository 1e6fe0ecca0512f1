"""The steady-state window of a run: token counts, TTFT, message gaps, per-layer deltas."""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.stackbench.plan import Plan
from tensorchat.bench.stats import Distribution, RequestResult


class GeneratedCounter:
    """Samples an engine's generated-token counter in the background, to read it at any time."""

    def __init__(self, read: Callable[[], int], interval: float = 0.25) -> None:
        self._read = read
        self._interval = interval
        self._samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="generated-counter", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._samples.append((time.monotonic(), self._read()))
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> GeneratedCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, lo: float, hi: float) -> float:
        """Tokens generated in [lo, hi]."""
        return counted_between(self._samples, lo, hi)


def counted_between(samples: Sequence[tuple[float, int]], lo: float, hi: float) -> float:
    """The growth of a sampled counter over [lo, hi], interpolating between samples."""

    def at(t: float) -> float:
        for (t1, v1), (t2, v2) in itertools.pairwise(samples):
            if t1 <= t <= t2:
                return v1 + (v2 - v1) * (t - t1) / (t2 - t1) if t2 > t1 else v1
        return float(samples[0][1] if t < samples[0][0] else samples[-1][1])

    return at(hi) - at(lo) if samples else math.nan


def analyse(
    results: Sequence[RequestResult],
    plan: Plan,
    t0: float,
    emitted_between: Callable[[float, float], float] | None = None,
) -> dict[str, Any]:
    """Window figures: token counts, TTFT of requests sent in it, message gaps in it.

    `emitted_between(lo, hi)` counts what the engine generated (None: no engine behind).
    """
    lo, hi = t0 + plan.warmup, t0 + plan.duration
    offered = plan.streams * plan.rate * (hi - lo)
    emitted = emitted_between(lo, hi) if emitted_between is not None else math.nan
    delivered = 0.0
    ttft: list[float] = []
    gaps: list[float] = []
    per_message: list[float] = []
    for r in results:
        times = r.token_times()
        delivered += sum(n for t, n in times if lo <= t < hi)
        if lo <= r.start < hi and r.ttft is not None:
            ttft.append(r.ttft)
        previous = None
        for t, n in times:
            if previous is not None and lo <= t < hi:
                gaps.append(t - previous)
                per_message.append(n)
            previous = t
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error or "unknown"] = errors.get(r.error or "unknown", 0) + 1
    return {
        "requests": len(results),
        "errors": errors,
        "window_s": plan.duration - plan.warmup,
        "offered_tokens": round(offered),
        "emitted_tokens": None if math.isnan(emitted) else round(emitted),
        "delivered_tokens": round(delivered),
        "delivered_over_emitted": delivered / emitted if emitted > 0 else math.nan,
        "emitted_over_offered": emitted / offered,
        "delivered_over_offered": delivered / offered,
        "delivered_tokens_per_s": delivered / (plan.duration - plan.warmup),
        "ttft_ms": Distribution.of(ttft, 1000.0).to_json(),
        "itl_ms": Distribution.of(gaps, 1000.0).to_json(),
        "tokens_per_message": sum(per_message) / len(per_message) if per_message else math.nan,
    }


def summarize_point(
    name: str,
    results: Sequence[RequestResult],
    t0: float,
    plan: Plan,
    extra: dict[str, Any],
    counter: GeneratedCounter | None = None,
) -> dict[str, Any]:
    figures = analyse(results, plan, t0, counter.between if counter is not None else None)
    tps = figures["delivered_tokens_per_s"]
    msgs = tps / figures["tokens_per_message"] if figures["tokens_per_message"] else math.nan
    cores = dict(extra.get("cpu_cores", {}))
    for i, c in enumerate(extra.get("client_cpu_per_worker", [])):
        cores[f"client{i}"] = c
    # CPU per delivered token and per message: the capacity model (tokens/s per core).
    figures["cpu_us_per_token"] = {k: round(c / tps * 1e6, 1) for k, c in cores.items() if tps}
    figures["cpu_us_per_message"] = {k: round(c / msgs * 1e6, 1) for k, c in cores.items() if msgs}
    figures.update(extra)
    itl = figures["itl_ms"]
    print(
        f"{plan.streams:>4} streams {name:>6}: delivered/emitted"
        f" {figures['delivered_over_emitted']:.4f}, delivered/offered"
        f" {figures['delivered_over_offered']:.4f} ({tps:.0f} of {plan.nominal:.0f} tok/s),"
        f" TTFT p50/p99 {figures['ttft_ms']['p50']}/{figures['ttft_ms']['p99']} ms,"
        f" ITL p50/p99 {itl['p50']}/{itl['p99']} ms,"
        f" {figures['tokens_per_message']:.2f} tok/msg, errors {figures['errors']},"
        f" CPU cores {cores}, machine {extra.get('machine', {})}",
        flush=True,
    )
    return figures


def added_by_layers(points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Median TTFT and p99 inter-token latency each layer adds over the one below it."""
    added: dict[str, Any] = {}
    for upper, lower in (("grpc", "engine"), ("rest", "grpc")):
        if upper in points and lower in points:
            up, low = points[upper], points[lower]
            added[f"{upper}_over_{lower}"] = {
                "ttft_p50_ms": round(up["ttft_ms"]["p50"] - low["ttft_ms"]["p50"], 3),
                "itl_p99_ms": round(up["itl_ms"]["p99"] - low["itl_ms"]["p99"], 3),
            }
    return added
