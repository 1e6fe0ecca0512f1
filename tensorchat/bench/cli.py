"""The `tensorchat bench` command: parse options, run each load level, print and save results."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensorchat.bench.report import RunReport, format_run, plot, write_json
from tensorchat.bench.runner import LoadShape, RunOutcome, run_load
from tensorchat.bench.target import Target
from tensorchat.bench.workload import LengthDist, RequestSpec, load_dataset, synthetic_requests

DESCRIPTION = """\
Load-test an OpenAI-compatible chat-completions endpoint (--url) or the inference
service's Generate RPC (--grpc). Reports request and output-token throughput, TTFT,
inter-token latency, TPOT and end-to-end latency (mean, p50, p90, p99, max) and errors by
kind, per load level.

examples:
  tensorchat bench --url http://localhost:8000/v1 --model qwen --concurrency 1,8,64 \\
      --num-requests 200 --output-tokens 256 --plot load.png --json load.json
  tensorchat bench --grpc localhost:50051 --model qwen --request-rate 20 --duration 60
"""


def _default_workers() -> int:
    # Half the cores: the rest is left to the server when both run on one machine.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return values


def _rate_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 2,5.5,10, got {text!r}") from None
    if not values or min(values) <= 0 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError("request rates must be finite and > 0")
    return values


def _length(text: str) -> LengthDist:
    try:
        return LengthDist.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("target")
    door = where.add_mutually_exclusive_group(required=True)
    door.add_argument("--url", help="OpenAI base URL, e.g. http://localhost:8000/v1")
    door.add_argument("--grpc", metavar="HOST:PORT", help="drive Generate on this server")
    where.add_argument("--model", required=True, help="model id or alias")
    where.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="Bearer key (default: $OPENAI_API_KEY)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=_int_list,
        help="requests in flight, one run per level (e.g. 1,8,64); with --request-rate, the"
        " cap on requests in flight (default: 1, or no cap with --request-rate)",
    )
    load.add_argument(
        "--request-rate",
        type=_rate_list,
        help="Poisson arrivals per second, one run per rate (e.g. 2,5,10)",
    )
    load.add_argument("--num-requests", type=int, default=100, help="requests per run")
    load.add_argument(
        "--duration",
        type=float,
        help="issue requests for this many seconds per run (cycling the workload)",
    )
    load.add_argument(
        "--ramp-up",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="closed loop: start the users evenly over this many seconds instead of all at"
        " once; with equal-length requests, about one request's duration keeps them from"
        " arriving in lockstep waves (default 0)",
    )
    load.add_argument("--warmup", type=int, default=0, help="unmeasured requests before each run")
    load.add_argument(
        "--workers",
        type=int,
        default=_default_workers(),
        help="client processes sharing the load (default: half the cores, here %(default)s)",
    )
    work = parser.add_argument_group("workload")
    work.add_argument(
        "--prompt-tokens",
        type=_length,
        default=LengthDist.parse("128"),
        help="prompt length: N, uniform:LOW:HIGH or normal:MEAN:STDDEV (default 128)",
    )
    work.add_argument(
        "--output-tokens",
        type=_length,
        default=LengthDist.parse("128"),
        help="max_tokens per request, same forms (default 128)",
    )
    work.add_argument(
        "--dataset",
        type=Path,
        help="JSONL of {messages|prompt, [max_tokens]}, cycled to --num-requests",
    )
    work.add_argument("--seed", type=int, default=0, help="workload seed")
    send = parser.add_argument_group("request options")
    send.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, default=True, help="stream (SSE)"
    )
    send.add_argument(
        "--ignore-eos",
        action="store_true",
        help="ask for exactly max_tokens (an extension; the server must accept it)",
    )
    send.add_argument("--temperature", type=float, help="sampling temperature (default: server's)")
    send.add_argument("--timeout", type=float, default=600.0, help="per-request timeout (s)")
    send.add_argument(
        "--http-client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw (default): a minimal asyncio HTTP/1.1 client, several times cheaper per"
        " streamed event than httpx (benchmarks/README.md); httpx: for proxies, HTTP/2 or"
        " compressed responses",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="write all results as JSON")
    out.add_argument("--plot", type=Path, metavar="FILE.png", help="latency vs load plot")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `bench` to the `tensorchat` command."""
    parser = subparsers.add_parser(
        "bench",
        help="load-test an OpenAI-compatible endpoint or the Generate RPC",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def shapes(args: argparse.Namespace) -> list[LoadShape]:
    """One load shape per level given on the command line; LoadShape rejects bad mixes."""
    levels: list[tuple[int | None, float | None]]
    if args.request_rate:
        cap = args.concurrency or [None]
        if len(cap) > 1 and len(args.request_rate) > 1:
            raise SystemExit("give several --request-rate values or several caps, not both")
        levels = [(c, rate) for rate in args.request_rate for c in cap]
    else:
        levels = [(c, None) for c in args.concurrency or [1]]
    try:
        return [
            LoadShape(c, rate, duration_s=args.duration, ramp_up_s=args.ramp_up)
            for c, rate in levels
        ]
    except ValueError as error:
        raise SystemExit(f"invalid load: {error}") from None


def target_of(args: argparse.Namespace) -> Target:
    return Target(
        kind="grpc" if args.grpc else "http",
        address=args.grpc or args.url,
        model=args.model,
        api_key=args.api_key,
        stream=args.stream,
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        timeout_s=args.timeout,
        http_client=args.http_client,
    )


def _config(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    return {
        "target": target.kind,
        "address": target.address,
        "model": target.model,
        "stream": target.stream if target.kind == "http" else True,
        "ignore_eos": target.ignore_eos,
        "num_requests": args.num_requests,
        "duration_s": args.duration,
        "prompt_tokens": str(args.prompt_tokens),
        "output_tokens": str(args.output_tokens),
        "dataset": str(args.dataset) if args.dataset else None,
        "workers": args.workers,
        "http_client": target.http_client,
        "ramp_up_s": args.ramp_up,
        "seed": args.seed,
    }


def run(args: argparse.Namespace) -> int:
    if args.num_requests < 1 or args.workers < 1:
        raise SystemExit("--num-requests and --workers must be >= 1")
    target = target_of(args)
    if args.dataset:
        specs = load_dataset(args.dataset, args.num_requests, args.output_tokens, args.seed)
    else:
        specs = synthetic_requests(
            args.num_requests, args.prompt_tokens, args.output_tokens, args.seed
        )
    reports = []
    for shape in shapes(args):
        if args.warmup:
            warm = LoadShape(concurrency=min(args.warmup, shape.concurrency or args.warmup))
            run_load(target, specs[: args.warmup], warm, workers=1, seed=args.seed)
        outcome = _run_with_progress(args, target, specs, shape)
        report = RunReport.of(outcome)
        reports.append(report)
        print(format_run(report), flush=True)
    if args.json:
        write_json(args.json, _config(args, target), reports)
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot, reports, title=f"{target.model} via {target.kind} {target.address}")
        print(f"wrote {args.plot}")
    failed = sum(r.summary.requests - r.summary.completed for r in reports)
    return 1 if failed and all(r.summary.completed == 0 for r in reports) else 0


def _run_with_progress(
    args: argparse.Namespace, target: Target, specs: Sequence[RequestSpec], shape: LoadShape
) -> RunOutcome:
    if args.no_progress:
        return run_load(target, specs, shape, workers=args.workers, seed=args.seed)
    from tqdm import tqdm

    total = None if shape.duration_s is not None else len(specs)
    with tqdm(total=total, desc=shape.label, unit="req", file=sys.stderr, leave=False) as bar:
        errors = 0

        def tick(ok: bool) -> None:
            nonlocal errors
            errors += not ok
            bar.update(1)
            if errors:
                bar.set_postfix(errors=errors, refresh=False)

        return run_load(target, specs, shape, workers=args.workers, seed=args.seed, progress=tick)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tensorchat.bench ...`, the same as `tensorchat bench ...`."""
    parser = argparse.ArgumentParser(
        prog="tensorchat bench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "main", "register", "run"]
