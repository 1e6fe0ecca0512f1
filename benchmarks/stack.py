#!/usr/bin/env python3
"""The stack benchmark: can the Python frontend carry ~30,000 tokens/s over 256 streams?

The inference service runs the synthetic engine (no compute: every stream emits
`--rate` tokens/s on the wall clock) and the facade runs in front of it, each in its own
process, as in production. `tensorchat bench` drives `--streams` concurrent streams in a
closed loop, started evenly over one request's duration (`--ramp-up`: requests of equal
length started together would stay in lockstep), and the same load is measured at four
points:

  engine  the synthetic engine read in-process: the floor every layer adds to
  fake    a trivially fast SSE server paced the same way: what the client itself can take
  grpc    client -> gRPC Generate -> inference service
  rest    client -> HTTP/SSE -> facade -> gRPC -> inference service

Reported per point: delivered/emitted tokens in a steady-state window, TTFT and message
gaps (inter-token latency), and for grpc/rest what the layer adds over the one below
(median TTFT, p99 inter-token latency), plus each process's CPU use.

Three token counts over the window [warmup, duration]:
  offered    streams x rate x window: every stream busy all the time
  emitted    what the engine generated, from its own counter (GetStats `generated_tokens`,
             sampled every 0.25 s and interpolated at the window's edges)
  delivered  what the client received
delivered/emitted says whether the stack carries what the engine produces (a stack that
falls behind delivers late); emitted/offered is the engine's duty, below 1 by the time
streams sit idle between requests (TTFT, the client's turnaround); delivered/offered is the
product, the strictest figure.

Run from the repository root:  .venv/bin/python benchmarks/stack.py --json stack.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a script: the repository root is what makes `benchmarks.stackbench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stackbench.cpu import busy_neighbour
from benchmarks.stackbench.plan import POINTS, Plan
from benchmarks.stackbench.session import run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams", default="256", help="concurrent streams; several levels: 32,64,256"
    )
    parser.add_argument("--rate", type=float, default=120.0, help="tokens/s per stream")
    parser.add_argument("--output-tokens", type=int, default=480, help="max_tokens per request")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt words")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds issuing requests")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds left out of the window")
    parser.add_argument(
        "--ramp-up",
        type=float,
        help="seconds over which the streams start (default: one request's duration,"
        " output tokens / rate, so that requests arrive evenly; 0: all at once, and then in"
        " lockstep waves, since every request takes the same time)",
    )
    parser.add_argument("--workers", type=int, default=1, help="client processes")
    parser.add_argument("--tick-ms", type=float, default=5.0, help="synthetic engine tick")
    parser.add_argument(
        "--max-messages-per-second",
        type=float,
        help="the inference service's message budget (default: its own default)",
    )
    parser.add_argument(
        "--min-stream-interval-ms",
        type=float,
        help="the inference service's least interval between a stream's messages"
        " (default: its own default)",
    )
    parser.add_argument(
        "--neighbour-cores",
        type=float,
        default=0.0,
        help="keep this much CPU busy in another process throughout, e.g. the facade's CPU"
        " beside the grpc point, to tell contention for the cores from a layer's own latency",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the inference service alone on the first CPU and the facade, the client"
        " and the fake server on the others, as on a GPU host where the service has cores"
        " of its own (default: every process may run on every CPU)",
    )
    parser.add_argument("--points", default=",".join(POINTS), help=f"subset of {POINTS}")
    parser.add_argument("--checkpoint", type=Path, help="tokenizer checkpoint dir")
    parser.add_argument("--profile", type=Path, help="py-spy the servers; raw stacks go here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    if unknown := set(points) - set(POINTS):
        parser.error(f"unknown points {sorted(unknown)}")
    ramp_up = args.output_tokens / args.rate if args.ramp_up is None else args.ramp_up
    plans = [
        Plan(
            streams=int(streams),
            rate=args.rate,
            output_tokens=args.output_tokens,
            prompt_tokens=args.prompt_tokens,
            duration=args.duration,
            warmup=args.warmup,
            workers=args.workers,
            tick_ms=args.tick_ms,
            messages_per_second=args.max_messages_per_second,
            min_stream_interval_ms=args.min_stream_interval_ms,
            ramp_up=ramp_up,
            neighbour_cores=args.neighbour_cores,
            pin=args.pin,
        )
        for streams in args.streams.split(",")
    ]
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be shorter than --duration")
    if ramp_up > args.warmup:
        parser.error(f"--warmup ({args.warmup:g}s) must cover the ramp-up ({ramp_up:g}s)")
    with busy_neighbour(args.neighbour_cores):
        result = run(plans, points, args.checkpoint, args.profile)
    print(json.dumps([{"streams": lv["streams"], **lv["added"]} for lv in result["levels"]]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
