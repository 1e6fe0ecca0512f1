#!/usr/bin/env python3
"""GenerateMany's transport alone: CPU µs per request of each side, trees side by side.

The facade's `BackendStreams` (client process) sends requests over loopback gRPC to the
service's `GenerateManySession` (server process), whose generations are stand-ins: `--tokens`
deltas a tick apart, then a finish, with no model, template or engine. So the figures are
what the transport costs per request on each side (request writes and reads, event writes
and reads), which facade_overhead.py measures inside ~700 µs of other work per request.

Each block runs in fresh processes of one tree (`--tree`, repeatable; default this one), the
trees' blocks alternating round by round, so that a change and its baseline share the same
minutes of a noisy machine. CPU is each process's user + system time during the block.

  .venv/bin/python benchmarks/generate_many_transport.py --tree /tmp/base --tree .
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIDES = ("client", "server")
PROMPT = "Write a short poem about the sea, in the style of a sailor's song. " * 4


def serve(port: int, tick_s: float, ready: Any, stop: Any) -> None:
    """The server process: GenerateManySession over grpc.aio, stand-in generations."""
    import grpc

    from inference.generate_many import GenerateManySession
    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    async def run_request(request: pb.GenerateRequest) -> Any:
        tokens = request.stopping.max_tokens
        for i in range(tokens):
            await asyncio.sleep(tick_s)
            delta = pb.Delta(text=" tok", token_ids=[100 + i])
            if i < tokens - 1:
                yield pb.GenerateResponse(index=0, delta=delta)
        usage = pb.Usage(prompt_tokens=20, completion_tokens=tokens)
        yield pb.GenerateResponse(index=0, delta=delta)
        yield pb.GenerateResponse(index=0, finished=pb.Finished(usage=usage))

    class Servicer(pb_grpc.InferenceServicer):
        async def GenerateMany(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
            await GenerateManySession(run_request, context.write).run(request_iterator)

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_InferenceServicer_to_server(Servicer(), server)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await server.stop(None)

    import uvloop

    uvloop.run(main())


async def drive(
    port: int, requests: int, concurrency: int, tokens: int, jitter_s: float, server_pid: int
) -> dict:
    import grpc
    import psutil

    from facade.backend_streams import EOF, BackendStreams
    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    streams = BackendStreams(pb_grpc.InferenceStub(channel))
    messages = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content=PROMPT)])
    stopping = pb.StoppingCriteria(max_tokens=tokens)
    counter = iter(range(10**9))
    received = [0]
    rng = random.Random(0)

    async def one() -> None:
        request_id = f"req_{next(counter):032d}"
        request = pb.GenerateRequest(
            request_id=request_id, model="m", messages=messages, stopping=stopping
        )
        generation = await streams.start(request, None)
        while (response := await generation.read()) is not EOF:
            received[0] += len(response.delta.token_ids)

    async def users(n: int) -> None:
        left = [n]

        async def user() -> None:
            while left[0] > 0:
                left[0] -= 1
                # Clients do not arrive in lockstep (HTTP, admission): spread the starts.
                await asyncio.sleep(rng.uniform(0, jitter_s))
                await one()

        await asyncio.gather(*(user() for _ in range(concurrency)))

    await users(concurrency * 20)  # unmeasured: connections, streams, lazy paths
    procs = {"client": psutil.Process(), "server": psutil.Process(server_pid)}

    def cpu() -> dict[str, float]:
        return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}

    before, t0 = cpu(), time.monotonic()
    await users(requests)
    after, wall = cpu(), time.monotonic() - t0
    await streams.aclose()
    await channel.close(None)
    us = {k: (after[k] - before[k]) / requests * 1e6 for k in procs}
    # Every token arrived (a lost start or event would hang the block instead).
    assert received[0] == (requests + concurrency * 20) * tokens, received
    return {"wall_s": wall, **us}


def child(args: argparse.Namespace) -> None:
    """One block in this tree: a server process and this one as the client."""
    sys.path.insert(0, str(args.child))
    os.chdir(args.child)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve, args=(port, args.tick_ms / 1000, ready, stop))
    server.start()
    try:
        ready.wait(60)
        import uvloop

        result = uvloop.run(
            drive(
                port,
                args.requests,
                args.concurrency,
                args.tokens,
                args.jitter_ms / 1000,
                server.pid or 0,
            )
        )
    finally:
        stop.set()
        server.join(10)
    print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4000, help="requests per block")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=1, help="tokens per request")
    parser.add_argument("--tick-ms", type=float, default=1.0, help="between two tokens")
    parser.add_argument("--jitter-ms", type=float, default=1.0, help="before each request")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return 0
    trees = [t.resolve() for t in args.tree] or [Path(__file__).resolve().parents[1]]
    passed = [
        "--requests",
        str(args.requests),
        "--concurrency",
        str(args.concurrency),
        "--tokens",
        str(args.tokens),
        "--tick-ms",
        str(args.tick_ms),
        "--jitter-ms",
        str(args.jitter_ms),
    ]
    blocks: dict[str, list[dict]] = {str(t): [] for t in trees}
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else trees[::-1]
        for tree in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(tree), *passed],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            block = json.loads(out.strip().splitlines()[-1])
            blocks[str(tree)].append(block)
            client, server, wall = block["client"], block["server"], block["wall_s"]
            print(
                f"round {round_} {tree}: client {client:.1f} µs/req,"
                f" server {server:.1f} µs/req, {wall:.2f} s",
                flush=True,
            )
    summary = {
        tree: {side: round(statistics.median(b[side] for b in bs), 1) for side in SIDES}
        for tree, bs in blocks.items()
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
