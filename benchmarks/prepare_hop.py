#!/usr/bin/env python3
"""What handing one job to the preparation threads and back costs: CPU µs per call of a trivial
function with `--concurrency` callers, `loop.run_in_executor(ThreadPoolExecutor)` vs
`PrepareThreads.run` (inference/prepare_threads.py), in alternating rounds of one process.

Run from the repository root:
  .venv/bin/python benchmarks/prepare_hop.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.prepare_threads import PrepareThreads
from inference.runner import PREPARE_THREADS


def job() -> int:
    return 1


async def cpu_us_per_call(hop: Callable[[], Awaitable[int]], callers: int, calls: int) -> float:
    async def caller() -> None:
        for _ in range(calls):
            await hop()

    start = time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return (time.process_time() - start) / (callers * calls) * 1e6


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(PREPARE_THREADS)
    threads = PrepareThreads(PREPARE_THREADS)
    hops: dict[str, Callable[[], Awaitable[int]]] = {
        "run_in_executor": lambda: loop.run_in_executor(pool, job),
        "PrepareThreads": lambda: threads.run(job),
    }
    figures: dict[str, list[float]] = {name: [] for name in hops}
    for _ in range(args.rounds):
        for name, hop in hops.items():
            figures[name].append(await cpu_us_per_call(hop, args.concurrency, args.calls))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=200, help="calls per caller per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    for name, values in asyncio.run(measure(args)).items():
        print(f"{name:>16}: {statistics.median(values):5.1f} CPU µs per call (median of "
              f"{args.rounds} rounds; min {min(values):.1f}, max {max(values):.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
