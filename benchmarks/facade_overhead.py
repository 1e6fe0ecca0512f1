#!/usr/bin/env python3
"""What the facade costs per chat request: its CPU µs per request and the TTFT it adds.

Starts the real `tensorchat inference` (synthetic engine, 1 ms ticks) and `tensorchat facade`
processes as `benchmarks/stack.py` does, then alternates blocks of short streaming requests
(`--max-tokens`, default 2), `--concurrency` at a time, sent through the facade (REST/SSE)
and straight to the inference service (gRPC). Per block it reads each process's CPU time
(psutil: every thread, user + system) before and after, so the figures are CPU µs per
request, which hold on a shared machine where latencies do not; TTFT medians come too.

  facade_us     facade CPU per REST request (idle background work subtracted)
  inference_us  inference CPU per request, REST and gRPC (the same RPC: should match)
  client_us     this process per request: for gRPC, what a bare grpc.aio client costs per
                call, the floor of the facade's own gRPC call
  ttft_ms       client-side median TTFT, REST and gRPC, and REST minus gRPC

`--tree DIR` (repeatable) also starts a facade from another checkout (`git worktree add` or
`git archive` of a commit) and sends its blocks in turn with the others, so a change is
measured against its baseline in the same minutes. `--profile FILE` samples the facade with
py-spy during the REST blocks; `--perf FILE` records it with `perf` (native frames).

Run from the repository root:
  .venv/bin/python benchmarks/facade_overhead.py --requests 1000 --rounds 5
  .venv/bin/python benchmarks/facade_overhead.py --tree /tmp/base   # this tree vs /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

# Run as a script: the repository root is what makes `benchmarks.stackbench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stackbench.cpu import CpuSpent, idle_cores
from benchmarks.stackbench.plan import API_KEY, MODEL, REPO, Plan
from benchmarks.stackbench.profile import profile_summary
from benchmarks.stackbench.servers import (
    default_checkpoint,
    start_facade,
    start_inference,
    write_models_config,
)
from tensorchat.bench.senders import ClosableSender, open_sender
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec, make_prompt


@dataclass(frozen=True)
class Block:
    """One block of requests to one point: CPU per request of each process, median TTFT."""

    point: str  # "grpc" or a facade's label
    requests: int
    errors: int
    wall_s: float
    cpu_us: dict[str, float]  # process label -> CPU µs per request
    ttft_ms: float


@dataclass(frozen=True)
class Facade:
    label: str
    target: Target
    proc: psutil.Process


async def run_block(
    sender: ClosableSender,
    point: str,
    specs: Sequence[RequestSpec],
    concurrency: int,
    procs: dict[str, psutil.Process],
    idle: dict[str, float],
) -> Block:
    """Send `specs`, `concurrency` at a time; CPU per request with idle work subtracted."""
    queue = list(reversed(specs))
    results: list[RequestResult] = []

    async def user() -> None:
        while queue:
            results.append(await sender.send(queue.pop()))

    with CpuSpent(procs, idle) as spent:
        await asyncio.gather(*(user() for _ in range(concurrency)))
    n = len(results)
    cpu = spent.per(n)
    ttfts = [r.ttft for r in results if r.ok and r.ttft is not None]
    errors = sum(1 for r in results if not r.ok)
    ttft = statistics.median(ttfts) * 1000 if ttfts else float("nan")
    return Block(point, n, errors, spent.wall_s, cpu, ttft)


def specs_for(n: int, prompt_words: int, max_tokens: int) -> list[RequestSpec]:
    rng = random.Random(0)
    return [
        RequestSpec(messages=(("user", make_prompt(prompt_words, rng)),), max_tokens=max_tokens)
        for _ in range(n)
    ]


async def rest_block(
    facade: Facade,
    specs: Sequence[RequestSpec],
    concurrency: int,
    procs: dict[str, psutil.Process],
    idle: dict[str, float],
) -> Block:
    # New connections per block: uvicorn closes keep-alive connections idle for 5 s (the
    # other blocks), which the raw client does not retry.
    async with open_sender(facade.target, concurrency) as sender:
        await sender.send(specs[0])
        return await run_block(sender, facade.label, specs, concurrency, procs, idle)


def print_block(round_: int, block: Block) -> None:
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in block.cpu_us.items())
    print(
        f"round {round_} {block.point:>8}: {block.requests} req in {block.wall_s:.2f}s,"
        f" errors {block.errors}, TTFT p50 {block.ttft_ms:.3f} ms, CPU µs/req {cpu}",
        flush=True,
    )


async def drive(
    args: argparse.Namespace,
    facades: Sequence[Facade],
    grpc: Target,
    procs: dict[str, psutil.Process],
) -> list[Block]:
    specs = specs_for(args.requests, args.prompt_words, args.max_tokens)
    warm = specs[: args.concurrency * 20]
    blocks: list[Block] = []
    async with open_sender(grpc, None) as grpc_sender:
        # Unmeasured: connections, caches and the servers' lazy paths.
        for facade in facades:
            async with open_sender(facade.target, args.concurrency) as sender:
                await asyncio.gather(*(sender.send(s) for s in warm))
        await asyncio.gather(*(grpc_sender.send(s) for s in warm))
        idle = idle_cores(procs, args.idle_s)
        print(f"idle cores: {idle}", flush=True)
        recorder = start_recorder(args, facades[0].proc.pid)
        for round_ in range(args.rounds):
            # Rotate the order so that no facade always runs right after the gRPC block.
            shift = round_ % len(facades)
            for facade in [*facades[shift:], *facades[:shift]]:
                block = await rest_block(facade, specs, args.concurrency, procs, idle)
                blocks.append(block)
                print_block(round_, block)
            if recorder is None:  # only the facade is profiled
                block = await run_block(grpc_sender, "grpc", specs, args.concurrency, procs, idle)
                blocks.append(block)
                print_block(round_, block)
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)  # both write what they have
            recorder.wait(timeout=60)
    return blocks


def start_recorder(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy (`--profile`) or perf (`--perf`) on the first facade, if asked for."""
    if args.profile is not None:
        exe = str(Path(sys.executable).parent / "py-spy")
        command = [exe, "record", "--pid", str(pid), "--rate", str(args.profile_rate),
                   "--format", "raw", "--output", str(args.profile)]  # fmt: skip
    elif args.perf is not None:
        command = ["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", str(args.perf)]
    else:
        return None
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # attached before the measured blocks
    return proc


def summarize(blocks: Sequence[Block], labels: Sequence[str]) -> dict[str, Any]:
    def median(point: str, key: str) -> float:
        values = [b.cpu_us[key] for b in blocks if b.point == point]
        return round(statistics.median(values), 1) if values else float("nan")

    def ttft(point: str) -> float:
        values = [b.ttft_ms for b in blocks if b.point == point]
        return round(statistics.median(values), 3) if values else float("nan")

    out: dict[str, Any] = {
        "grpc": {
            "inference_us": median("grpc", "inference"),
            "client_us": median("grpc", "client"),
            "ttft_ms": ttft("grpc"),
        },
        "errors": sum(b.errors for b in blocks),
    }
    for label in labels:
        out[label] = {
            "facade_us": median(label, label),
            "facade_us_blocks": [round(b.cpu_us[label], 1) for b in blocks if b.point == label],
            "inference_us": median(label, "inference"),
            "client_us": median(label, "client"),
            "ttft_ms": ttft(label),
            "ttft_added_ms": round(ttft(label) - ttft("grpc"), 3),
        }
    return out


def print_profile(raw: Path, facade_us: float, limit: int) -> None:
    summary = profile_summary(raw, limit=limit)
    for kind in ("inclusive", "self"):
        print(f"-- {kind} (share of facade samples, ~µs per request)")
        for name, share in summary[kind]:
            print(f"{share * 100:6.1f}%  {share * facade_us:7.1f} µs  {name}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per point")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--prompt-words", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0, help="engine tokens/s per stream")
    parser.add_argument("--tick-ms", type=float, default=1.0, help="synthetic engine tick")
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle CPU measurement")
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="also run a facade from here"
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the facade here")
    parser.add_argument("--profile-rate", type=int, default=1000, help="py-spy samples/s")
    parser.add_argument("--profile-top", type=int, default=40)
    parser.add_argument("--perf", type=Path, help="perf record the facade into this file")
    parser.add_argument(
        "--facade-env", action="append", default=[], help="NAME=VALUE for the facade processes"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="facade-overhead-"))
    plan = Plan(1, args.rate, args.max_tokens, args.prompt_words, 1.0, 0.0, 1, args.tick_ms)
    models = write_models_config(work, default_checkpoint(), plan)
    env = dict(item.split("=", 1) for item in args.facade_env)
    trees = {"facade": REPO, **{f"tree{i}": t for i, t in enumerate(args.tree, 1)}}
    with contextlib.ExitStack() as stack_:
        inference, address = start_inference(stack_, models, work)
        facades: list[Facade] = []
        for label, tree in trees.items():
            proc, url = start_facade(stack_, address, work, label=label, cwd=tree, env=env)
            target = Target("http", url, MODEL, api_key=API_KEY, ignore_eos=True)
            facades.append(Facade(label, target, psutil.Process(proc.pid)))
        procs = {f.label: f.proc for f in facades}
        procs["inference"] = psutil.Process(inference.pid)
        procs["client"] = psutil.Process()
        grpc = Target("grpc", address, MODEL, ignore_eos=True)
        import uvloop

        blocks = uvloop.run(drive(args, facades, grpc, procs))
    summary = summarize(blocks, [f.label for f in facades])
    summary["load_average_after"] = os.getloadavg()
    print(json.dumps(summary))
    if args.profile is not None:
        print_profile(args.profile, summary["facade"]["facade_us"], args.profile_top)
    if args.json:
        record = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "trees": {k: str(v) for k, v in trees.items()},
            "summary": summary,
            "blocks": [asdict(b) for b in blocks],
        }
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
