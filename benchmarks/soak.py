#!/usr/bin/env python3
"""`make soak`: the stack under load while its parts fail, and every request accounted for.

Two inference replicas (synthetic engine, real processes) behind a facade process carry
`--streams` streaming requests at `--concurrency`, `--disconnect` of them dropped by their
client half-way, while a chaos schedule SIGKILLs and restarts one replica, freezes the other
(SIGSTOP, then SIGCONT), drains (SIGTERM) and restarts a replica, and hostile connections
(idle ones, and slow headers sent a byte at a time) are held open alongside. At the end the
facade itself is drained with streams running.

Every request must end: completed (finish_reason and [DONE]), or failed with an error
(an error event and [DONE], or an error status), or dropped by its own client. It prints
completed / retried / failed-with-error / hung / duplicated ends / leaked slots and exits
non-zero on any hung, duplicated or leaked one (or a stream cut without an error event).

Run from the repository root:  .venv/bin/python benchmarks/soak.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as a script: the repository root is what makes `benchmarks.stackbench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.stackbench.plan import API_KEY, MODEL, TENSORCHAT
from benchmarks.stackbench.replicas import Replica, replicas
from benchmarks.stackbench.servers import free_port, http_ready, process, wait_until

HUNG_AFTER_S = 120.0  # a request with no end by then is hung
ERRORS: Counter[int] = Counter()  # error statuses


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


async def one_stream(client: httpx.AsyncClient, rng: random.Random, disconnect: float) -> str:
    """One streaming request; how it ended."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "soak " * rng.randint(1, 50)}],
        "max_tokens": rng.randint(20, 150),
        "stream": True,
    }
    leave_after = rng.randint(1, 10) if rng.random() < disconnect else None
    dones = finishes = chunks = 0
    error = False
    try:
        async with asyncio.timeout(HUNG_AFTER_S):
            async with client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    ERRORS[response.status_code] += 1
                    await response.aread()
                    return "failed_with_error"
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        dones += 1
                        continue
                    if dones:
                        return "duplicated"  # anything after [DONE]
                    event = json.loads(line[6:])
                    error = error or "error" in event
                    finishes += sum(1 for c in event.get("choices", []) if c.get("finish_reason"))
                    chunks += 1
                    if leave_after is not None and chunks >= leave_after:
                        return "disconnected"
    except TimeoutError:
        return "hung"
    except httpx.HTTPError:
        return "cut_without_error"  # the connection ended with no error event and [DONE]
    if dones > 1 or finishes > 1 or (error and finishes):
        return "duplicated"
    if dones == 1 and error:
        return "failed_with_error"
    if dones == 1 and finishes == 1:
        return "completed"
    return "cut_without_error"


async def drive(url: str, streams: int, concurrency: int, disconnect: float, tally: Tally) -> None:
    rng = random.Random(15)
    gate = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=HUNG_AFTER_S, limits=limits
    ) as client:

        async def run() -> None:
            async with gate:
                tally.add(await one_stream(client, rng, disconnect))

        await asyncio.gather(*(run() for _ in range(streams)))


def hostile(port: int, stop: threading.Event, idle: int = 50, slow: int = 5) -> None:
    """Idle connections that never send a request, and slow headers a byte a second."""
    with contextlib.ExitStack() as stack:
        for _ in range(idle):
            with contextlib.suppress(OSError):
                stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        slow_socks = []
        for _ in range(slow):
            with contextlib.suppress(OSError):
                slow_socks.append(
                    stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                )
        line = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        i = 0
        while not stop.wait(1.0):
            for sock in slow_socks:
                with contextlib.suppress(OSError):
                    sock.send(line[i % len(line) : i % len(line) + 1])
            i += 1


def chaos(reps: list[Replica], log: list[str]) -> None:
    """SIGKILL + restart of one replica, SIGSTOP/SIGCONT of the other, a drain + restart.

    Always run to its end (a frozen replica is always thawed): the leak check needs both up.
    """
    first, second = reps

    def drain_and_wait() -> None:
        first.drain()
        first.wait()

    steps: list[tuple[float, str, Callable[[], object]]] = [
        (8.0, "SIGKILL replica-0", first.kill),
        (2.0, "restart replica-0", first.start),
        (5.0, "SIGSTOP replica-1", second.freeze),
        (8.0, "SIGCONT replica-1", second.thaw),
        (8.0, "SIGTERM (drain) replica-0", drain_and_wait),
        (1.0, "restart replica-0", first.start),
    ]
    for wait_s, what, action in steps:
        time.sleep(wait_s)
        log.append(f"{time.strftime('%H:%M:%S')} {what}")
        action()


async def leaked(url: str, reps: list[Replica]) -> dict[str, float]:
    """Slots still held: the facade's in-flight gauge, and each replica's running requests."""
    import grpc

    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    held: dict[str, float] = {}
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(url.removesuffix("/v1") + "/metrics")).text
    for line in metrics.splitlines():
        if line.startswith("tensorchat_facade_in_flight_requests "):
            held["facade"] = float(line.split()[1])
    for replica in reps:
        with grpc.insecure_channel(replica.address) as channel:
            stats = pb_grpc.InferenceStub(channel).GetStats(pb.GetStatsRequest(), timeout=5)
        held[replica.name] = sum(m.active_requests for m in stats.models)
    return held


def retries(url: str) -> float:
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("tensorchat_facade_retries_total")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--disconnect", type=float, default=0.1, help="share dropped by clients")
    # 20 tokens/s: a stream lasts a few seconds, so the load outlasts the chaos schedule.
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tensorchat-soak-"))
    tally = Tally()
    events: list[str] = []
    with replicas(work, 2, rate=args.rate, shutdown_grace_s=2.0) as reps:
        port = free_port()
        facade_args = [*TENSORCHAT, "facade", "--port", str(port), "--backends"]
        facade_args.append(",".join(r.address for r in reps))
        env = {
            "TENSORCHAT_API_KEYS": API_KEY,
            "TENSORCHAT_KEYS_FILE": str(work / "keys.json"),
            "TENSORCHAT_REFRESH_INTERVAL_S": "1",
            "TENSORCHAT_BACKEND_KEEPALIVE_S": "1",
            "TENSORCHAT_BACKEND_KEEPALIVE_TIMEOUT_S": "1",
            "TENSORCHAT_PROGRESS_TIMEOUT_S": "5",
            "TENSORCHAT_SHUTDOWN_GRACE_S": "2",
        }
        url = f"http://127.0.0.1:{port}/v1"
        facade_log = work / "facade.log"
        with process(facade_args, facade_log, env) as facade:
            wait_until(lambda: http_ready(url), "facade", facade, facade_log, 120)
            stop = threading.Event()
            helpers = [
                threading.Thread(target=chaos, args=(reps, events), daemon=True),
                threading.Thread(target=hostile, args=(port, stop), daemon=True),
            ]
            for helper in helpers:
                helper.start()
            started = time.monotonic()
            asyncio.run(drive(url, args.streams, args.concurrency, args.disconnect, tally))
            elapsed = time.monotonic() - started
            stop.set()
            helpers[0].join()
            time.sleep(1.0)  # the facade's and replicas' last cancels land
            held = asyncio.run(leaked(url, reps))
            retried = retries(url)
            # The last tier's drain: the facade stops with streams running; each must end.
            final = Tally()
            events.append(
                f"{time.strftime('%H:%M:%S')} SIGTERM (drain) the facade, 32 streams running"
            )
            drain = threading.Timer(2.0, facade.terminate)
            drain.start()
            asyncio.run(drive(url, 32, 32, 0.0, final))
            facade.wait(30)
    tally.outcomes.update(final.outcomes)  # folded in: they must end as well
    outcomes = tally.outcomes
    leaks = sum(1 for count in held.values() if count)
    print("\n".join(events))
    print(
        f"\n{args.streams} + 32 streams at concurrency {args.concurrency}, "
        f"{args.disconnect:.0%} disconnects, {elapsed:.0f} s"
    )
    for name in ("completed", "failed_with_error", "disconnected", "hung", "duplicated",
                 "cut_without_error"):  # fmt: skip
        print(f"  {name:20} {outcomes.get(name, 0)}")
    print(f"  {'retried':20} {retried:.0f}")
    print(f"  {'error statuses':20} {dict(ERRORS)}")
    print(f"  {'leaked slots':20} {leaks}  {held}")
    print(f"logs: {work}")
    bad = outcomes["hung"] + outcomes["duplicated"] + outcomes["cut_without_error"] + leaks
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
