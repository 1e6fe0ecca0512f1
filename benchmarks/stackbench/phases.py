"""The request-CPU benchmark's phases (issue 20): what one block of each sends, and its figures.

  short     `requests` non-streamed requests, max_tokens 1, `concurrency` at a time: CPU µs
            per request (floor, each stack's facade, each stack's service over gRPC)
  streams   `streams` streams of `stream_tokens` tokens at `rate`, started together: CPU µs
            per stream and per token, SSE events per stream, tokens per event
  burst     `burst_streams` streams arriving at once: TTFT p50 / p99 (each opens its own
            connection, as new clients do)
  delivery  `delivery_streams` closed-loop streams at `delivery_rate`, ramped over one request:
            delivered tokens/s over the ideal in the steady window (stackbench.window)
  lowload   `lowload_streams` streams of `stream_tokens`: CPU per token, events, ITL p50/p99

Each block runs the load in this process with `tensorchat.bench` (fresh connections per
block: uvicorn closes keep-alive connections idle for 5 s) and reads each server process's
CPU around it, less its idle use.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil

from benchmarks.stackbench.blocks import client_figures, cpu_figures
from benchmarks.stackbench.cpu import CpuSpent
from benchmarks.stackbench.plan import Plan
from benchmarks.stackbench.session import drive_plan
from benchmarks.stackbench.window import GeneratedCounter, summarize_point
from tensorchat.bench.runner import LoadShape, run_load
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec, make_prompt

PHASES = ("short", "streams", "burst", "delivery", "lowload")
# Which kinds of point each phase measures.
KINDS = {
    "short": ("floor", "facade", "grpc"),
    "streams": ("floor", "facade"),
    "burst": ("floor", "facade"),
    "delivery": ("facade",),
    "lowload": ("floor", "facade"),
}


@dataclass(frozen=True)
class Point:
    """Where a block's load goes and which processes serve it there."""

    label: str  # "floor", a stack's label, or "<stack>/grpc"
    kind: str  # "floor", "facade" or "grpc"
    target: Target
    procs: dict[str, psutil.Process]  # role ("floor", "facade", "inference") -> process
    generated: Callable[[], int] | None = None  # the engine's generated-token counter


@dataclass(frozen=True)
class Settings:
    requests: int = 600
    concurrency: int = 32
    streams: int = 128
    stream_tokens: int = 200
    rate: float = 100.0
    burst_streams: int = 256
    burst_tokens: int = 50
    delivery_streams: int = 512
    delivery_rate: float = 120.0
    delivery_tokens: int = 240
    delivery_duration: float = 9.0
    delivery_warmup: float = 3.0
    lowload_streams: int = 8
    lowload_requests: int = 2
    prompt_words: int = 16
    tick_ms: float = 5.0


def model_for(rate: float) -> str:
    """The synthetic model that streams at `rate` tokens/s (one per rate: a model's pace is
    its config's)."""
    return f"synthetic-{rate:g}"


def _specs(count: int, max_tokens: int, prompt_words: int) -> list[RequestSpec]:
    rng = random.Random(0)  # distinct prompts, the same in every block and point
    return [
        RequestSpec(messages=(("user", make_prompt(prompt_words, rng)),), max_tokens=max_tokens)
        for _ in range(count)
    ]


def run_block(
    phase: str, point: Point, settings: Settings, idle: dict[str, float]
) -> dict[str, float]:
    """One block of `phase` on `point`: its figures."""
    s = settings
    if phase == "delivery":
        return _delivery(point, s, idle)
    if phase == "short":
        count, tokens, concurrency, stream = s.requests, 1, s.concurrency, False
    elif phase == "streams":
        count, tokens, concurrency, stream = s.streams, s.stream_tokens, s.streams, True
    elif phase == "burst":
        count, tokens, concurrency, stream = s.burst_streams, s.burst_tokens, s.burst_streams, True
    elif phase == "lowload":
        count = s.lowload_streams * s.lowload_requests
        tokens, concurrency, stream = s.stream_tokens, s.lowload_streams, True
    else:
        raise ValueError(f"unknown phase {phase!r}")
    target = replace(point.target, model=model_for(s.rate), stream=stream)
    specs = _specs(count, tokens, s.prompt_words)
    with CpuSpent(point.procs, idle) as spent:
        outcome = run_load(target, specs, LoadShape(concurrency=concurrency))
    figures = client_figures(outcome.results)
    n = figures["requests"]
    per_request = spent.per(n)
    per_request["client"] = sum(w.cpu_s for w in outcome.workers) / n * 1e6 if n else 0.0
    figures.update(cpu_figures(per_request, figures["tokens_per_request"]))
    figures["wall_s"] = spent.wall_s
    return figures


def warm(point: Point, settings: Settings) -> None:
    """Unmeasured: connections, caches and the servers' lazy paths, streamed and not."""
    s = settings
    for stream, tokens in ((False, 1), (True, 8)):
        target = replace(point.target, model=model_for(s.rate), stream=stream)
        specs = _specs(s.concurrency * 2, tokens, s.prompt_words)
        run_load(target, specs, LoadShape(concurrency=s.concurrency))


def delivery_plan(settings: Settings) -> Plan:
    s = settings
    return Plan(
        streams=s.delivery_streams,
        rate=s.delivery_rate,
        output_tokens=s.delivery_tokens,
        prompt_tokens=s.prompt_words,
        duration=s.delivery_duration,
        warmup=s.delivery_warmup,
        workers=1,
        tick_ms=s.tick_ms,
        # Arrivals spread over one request, as stack.py does: requests of equal length
        # started together would stay in lockstep waves.
        ramp_up=s.delivery_tokens / s.delivery_rate,
    )


def _delivery(point: Point, settings: Settings, idle: dict[str, float]) -> dict[str, float]:
    plan = delivery_plan(settings)
    target = replace(point.target, model=model_for(plan.rate), stream=True)
    counter = GeneratedCounter(point.generated) if point.generated is not None else None
    with CpuSpent(point.procs, idle) as spent, counter or contextlib.nullcontext():
        outcome, t0 = drive_plan(plan, target)
    cores = {role: sec / spent.wall_s for role, sec in spent.seconds.items()}
    point_figures = summarize_point(
        point.label, outcome.results, t0, plan, {"cpu_cores": cores}, counter
    )
    figures = {
        "requests": float(len(outcome.results)),
        "errors": float(sum(point_figures["errors"].values())),
        "delivered_over_offered": point_figures["delivered_over_offered"],
        "delivered_over_emitted": point_figures["delivered_over_emitted"],
        "tokens_per_event": point_figures["tokens_per_message"],
        "ttft_p50_ms": _or_nan(point_figures["ttft_ms"]["p50"]),
        "ttft_p99_ms": _or_nan(point_figures["ttft_ms"]["p99"]),
        "wall_s": spent.wall_s,
    }
    figures.update({f"{role}_cores": c for role, c in cores.items()})
    figures.update({f"{r}_us_per_token": v for r, v in point_figures["cpu_us_per_token"].items()})
    return figures


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
