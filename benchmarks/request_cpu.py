#!/usr/bin/env python3
"""Issue 20's goals in one run: CPU per request and per stream against a floor server.

Starts the floor (benchmarks/stackbench/floor.py: a bare Starlette app on uvicorn, canned
answers, streams paced like the synthetic engine) and a whole stack, the real `tensorchat
inference` (synthetic engine) and `tensorchat facade` processes of this tree; with `--tree
DIR` (repeatable) also a whole stack from each other checkout, so that before and after are
measured in the same minutes (the floor runs once, shared). The same client
(`tensorchat.bench`) drives every point, so the client's side of each ratio is equal.

Phases (`--phases`; each prints its medians and its goals as met / NOT MET):
  short     N requests, max_tokens 1, stream false, concurrency 32: facade CPU µs/request
            against the floor's (goal 1: <= 3x); inference µs/request through the facade
            and straight over gRPC (goal 2: halved against a --tree)
  streams   128 streams x 200 tokens at 100 tokens/s, started together: facade CPU µs per
            stream against the floor's (goal 1: <= 1x); inference µs per stream; SSE events
            per stream and tokens per event
  burst     256 streams arriving at once: TTFT p50 / p99 (goal 3: < 100 / < 250 ms)
  delivery  512 streams x 120 tokens/s: delivered over ideal tokens/s (goal 3: >= 0.95)
  lowload   8 streams x 200 tokens: CPU µs per token, events per stream, ITL p50 / p99
            (goal 4: per-token cost at most --lowload-bound x the floor's at low load)

Each of `--rounds` rounds runs every point of a phase once, in an order rotated by the
round; the figures are medians over rounds. CPU is per process (every thread) from its CPU
clock, with its idle use (measured once, `--idle-s`) subtracted: CPU µs per request holds on
a shared machine, latencies (TTFT, ITL) do not.

Run from the repository root:
  .venv/bin/python benchmarks/request_cpu.py --json benchmarks/results/request-cpu.json
  .venv/bin/python benchmarks/request_cpu.py --tree /tmp/base          # before / after
  .venv/bin/python benchmarks/request_cpu.py --quick --phases short   # a minute's smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import psutil

# Run as a script: the repository root is what makes `benchmarks.stackbench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stackbench.blocks import Block, Summary, medians, summary_to_json, versus
from benchmarks.stackbench.cpu import idle_cores
from benchmarks.stackbench.goals import Bounds, Goal, judge
from benchmarks.stackbench.phases import (
    KINDS,
    PHASES,
    Point,
    Settings,
    model_for,
    run_block,
    warm,
)
from benchmarks.stackbench.plan import API_KEY, REPO
from benchmarks.stackbench.servers import (
    default_checkpoint,
    grpc_generated_tokens,
    start_facade,
    start_floor,
    start_inference,
    write_synthetic_models,
)
from tensorchat.bench.report import machine
from tensorchat.bench.target import Target

THIS = "this"

# --quick: the same phases, smaller (about a minute without --tree).
QUICK = {
    "rounds": 2,
    "requests": 300,
    "stream_tokens": 100,
    "burst_tokens": 20,
    "delivery_duration": 6.0,
    "lowload_requests": 1,
    "idle_s": 1.5,
}

# One line per figure printed for a phase: (figure, format).
SHOWN = {
    "short": ["facade_us", "floor_us", "inference_us", "client_us", "latency_p50_ms"],
    "streams": [
        "facade_us", "floor_us", "inference_us", "facade_us_per_token", "floor_us_per_token",
        "inference_us_per_token", "events_per_stream", "tokens_per_event", "client_us",
    ],
    "burst": ["ttft_p50_ms", "ttft_p99_ms", "facade_us", "floor_us", "inference_us"],
    "delivery": [
        "delivered_over_offered", "delivered_over_emitted", "tokens_per_event", "ttft_p50_ms",
        "ttft_p99_ms", "facade_cores", "inference_cores",
    ],
    "lowload": [
        "facade_us_per_token", "floor_us_per_token", "inference_us_per_token",
        "events_per_stream", "itl_p50_ms", "itl_p99_ms",
    ],
}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1].split("Run from")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Settings()
    add = parser.add_argument
    add("--phases", default=",".join(PHASES), help=f"which phases, comma-separated: {PHASES}")
    add("--rounds", type=int, default=6, help="blocks per point and phase (medians over them)")
    add("--tree", type=Path, action="append", default=[],
        help="also a whole stack (inference + facade) from this checkout; repeatable")  # fmt: skip
    add("--quick", action="store_true", help=f"a smaller plan, about a minute: {QUICK}")
    add("--requests", type=int, default=d.requests, help="short: requests per block")
    add("--concurrency", type=int, default=d.concurrency, help="short: requests in flight")
    add("--streams", type=int, default=d.streams, help="streams: concurrent streams")
    add("--stream-tokens", type=int, default=d.stream_tokens,
        help="streams and lowload: tokens per stream")  # fmt: skip
    add("--rate", type=float, default=d.rate,
        help="tokens/s per stream of the synthetic engine and the floor (streams, burst,"
        " lowload)")  # fmt: skip
    add("--burst-streams", type=int, default=d.burst_streams, help="burst: streams at once")
    add("--burst-tokens", type=int, default=d.burst_tokens, help="burst: tokens per stream")
    add("--delivery-streams", type=int, default=d.delivery_streams,
        help="delivery: closed-loop streams")  # fmt: skip
    add("--delivery-rate", type=float, default=d.delivery_rate,
        help="delivery: tokens/s per stream")  # fmt: skip
    add("--delivery-tokens", type=int, default=d.delivery_tokens,
        help="delivery: tokens per request (the ramp-up is one request's duration)")  # fmt: skip
    add("--delivery-duration", type=float, default=d.delivery_duration,
        help="delivery: seconds issuing requests per block")  # fmt: skip
    add("--delivery-warmup", type=float, default=d.delivery_warmup,
        help="delivery: seconds left out of the measured window (covers the ramp-up)")  # fmt: skip
    add("--lowload-streams", type=int, default=d.lowload_streams, help="lowload: streams")
    add("--lowload-requests", type=int, default=d.lowload_requests,
        help="lowload: requests per stream per block, one after another")  # fmt: skip
    add("--prompt-words", type=int, default=d.prompt_words, help="words per prompt")
    add("--tick-ms", type=float, default=d.tick_ms, help="the synthetic engine's tick")
    add("--idle-s", type=float, default=3.0,
        help="seconds measuring each process's idle CPU, subtracted from every block")  # fmt: skip
    add("--lowload-bound", type=float, default=Bounds.lowload_x,
        help="goal 4: the most a token may cost at low load, in multiples of what it costs"
        " the floor at low load (the issue sets no number)")  # fmt: skip
    add("--json", type=Path, help="write args, machine, every block, summary and goals here")
    # --quick changes the defaults only: a flag given explicitly still wins.
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}")
    args.phases = phases
    if args.delivery_tokens / args.delivery_rate > args.delivery_warmup:
        parser.error("--delivery-warmup must cover the ramp-up (delivery tokens / rate)")
    if not 0 <= args.delivery_warmup < args.delivery_duration:
        parser.error("--delivery-warmup must be shorter than --delivery-duration")
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})


def tree_labels(trees: Sequence[Path]) -> dict[str, Path]:
    """this tree first, then each --tree by its directory's name (made unique)."""
    labels: dict[str, Path] = {THIS: REPO}
    for i, tree in enumerate(trees, 1):
        label = tree.resolve().name or f"tree{i}"
        labels[label if label not in labels else f"{label}{i}"] = tree
    return labels


def start_points(
    stack: contextlib.ExitStack, args: argparse.Namespace, work: Path
) -> tuple[list[Point], dict[str, Path]]:
    """The floor and, per tree, its facade and its service over gRPC, all started and ready."""
    rates = {model_for(r): r for r in (args.rate, args.delivery_rate)}
    models = write_synthetic_models(work, default_checkpoint(), rates, args.tick_ms)
    floor, floor_url = start_floor(stack, work, args.rate)
    points = [Point("floor", "floor", Target("http", floor_url, "floor"), {"floor": _ps(floor)})]
    trees = tree_labels(args.tree)
    for label, tree in trees.items():
        inference, address = start_inference(
            stack, models, work, label=f"{label}-inference", cwd=tree, model=model_for(args.rate)
        )
        facade, url = start_facade(stack, address, work, label=f"{label}-facade", cwd=tree)
        generated = grpc_generated_tokens(address)
        target = Target("http", url, "", api_key=API_KEY, ignore_eos=True)
        procs = {"facade": _ps(facade), "inference": _ps(inference)}
        points.append(Point(label, "facade", target, procs, generated))
        grpc = Target("grpc", address, "", ignore_eos=True)
        points.append(Point(f"{label}/grpc", "grpc", grpc, {"inference": procs["inference"]}))
    return points, trees


def _ps(proc: psutil.Popen) -> psutil.Process:
    return psutil.Process(proc.pid)


def print_block(block: Block) -> None:
    f = block.figures
    # CPU µs per request where a phase has requests to divide by, else per token (delivery).
    unit = "_us" if any(k.endswith("_us") for k in f) else "_us_per_token"
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in f.items() if k.endswith(unit))
    extra = ", ".join(
        f"{k} {f[k]:.3g}"
        for k in ("ttft_p50_ms", "ttft_p99_ms", "events_per_stream", "delivered_over_offered")
        if k in f
    )
    print(
        f"{block.phase} round {block.round} {block.point:>12}: {f['requests']:.0f} req,"
        f" errors {f['errors']:.0f}, CPU µs {cpu}; {extra}",
        flush=True,
    )


def print_phase(phase: str, summary: Summary, goals: Sequence[Goal]) -> None:
    points = summary.get(phase, {})
    print(f"== {phase}: medians ==")
    for point, figures in points.items():
        shown = ", ".join(f"{name} {figures[name]:.4g}" for name in SHOWN[phase] if name in figures)
        print(f"  {point:>12}: errors {figures.get('errors', 0):.0f}, {shown}")
    for goal in goals:
        if goal.phase == phase or (phase == "lowload" and goal.number == 4):
            print("  " + goal.line())
    if phase == "lowload":
        print_lowload_self_ratios(summary)
    print(flush=True)


def print_lowload_self_ratios(summary: Summary) -> None:
    """Information, not a goal (stackbench/goals.py): what a token costs at low load over
    what it costs in the streams phase, the floor's included."""
    streams = summary.get("streams", {})
    for point, figures in summary.get("lowload", {}).items():
        ratios = [
            f"{name.removesuffix('_us_per_token')} {low / high:.3g}x"
            for name, low in figures.items()
            if name.endswith("_us_per_token") and (high := streams.get(point, {}).get(name))
        ]
        if ratios:
            print(f"  {point:>12}: per token, low load / streams phase: {', '.join(ratios)}")


def measure(
    args: argparse.Namespace, points: Sequence[Point], trees: dict[str, Path]
) -> tuple[list[Block], dict[str, float]]:
    settings = settings_of(args)
    for point in points:
        warm(point, settings)
    procs = {f"{p.label}:{role}": proc for p in points for role, proc in p.procs.items()}
    idle_all = idle_cores(procs, args.idle_s)
    print(f"idle cores: { {k: round(v, 4) for k, v in idle_all.items()} }", flush=True)
    blocks: list[Block] = []
    stacks, befores = list(trees), [t for t in trees if t != THIS]
    bounds = replace(Bounds(), lowload_x=args.lowload_bound)
    for phase in args.phases:
        chosen = [p for p in points if p.kind in KINDS[phase]]
        for round_ in range(args.rounds):
            shift = round_ % len(chosen)
            for point in [*chosen[shift:], *chosen[:shift]]:
                idle = {role: idle_all[f"{point.label}:{role}"] for role in point.procs}
                block = Block(phase, round_, point.label, run_block(phase, point, settings, idle))
                blocks.append(block)
                print_block(block)
        summary = medians(blocks)
        print_phase(phase, summary, judge(summary, stacks, befores, bounds))
    return blocks, idle_all


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="request-cpu-"))
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with contextlib.ExitStack() as stack:
        points, trees = start_points(stack, args, work)
        blocks, idle = measure(args, points, trees)
    summary = medians(blocks)
    stacks, befores = list(trees), [t for t in trees if t != THIS]
    goals = judge(summary, stacks, befores, replace(Bounds(), lowload_x=args.lowload_bound))
    pairs = {
        f"{after} / {before}": versus(summary, after, before)
        for tree in befores
        for after, before in ((THIS, tree), (f"{THIS}/grpc", f"{tree}/grpc"))
    }
    for pair, phases in pairs.items():
        print(f"== {pair}: CPU after / before ==")
        for phase, ratios in phases.items():
            print(f"  {phase}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print("== goals ==")
    for goal in goals:
        print(goal.line())
    if args.json:
        record: dict[str, Any] = {
            "date": started,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "settings": asdict(settings_of(args)),
            "trees": {k: str(v) for k, v in trees.items()},
            "machine": {
                **machine(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
            },
            "idle_cores": idle,
            "summary": summary_to_json(summary),
            "goals": [g.to_json() for g in goals],
            "versus": pairs,
            "blocks": [b.to_json() for b in blocks],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
