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

`--bare` measures the least that grpc.aio itself costs for the same exchange, with no
tensorchat code on either side: one GenerateMany call, one message per start, the server
answering each start after its tick with one message (its delta and its end), the client a
single writer task and a reader that hands each end to its waiter. What a facade pays for the
hop to the service can only be above this (issue 20: 3x the floor needs the hop to cost less).
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


def serve(port: int, tick_s: float, ready: Any, stop: Any, bare: bool = False) -> None:
    """The server process: GenerateManySession over grpc.aio, stand-in generations (bare:
    a servicer that answers each start itself, `serve_bare`)."""
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
            if bare:
                await serve_bare(request_iterator, context, tick_s)
            else:
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


async def serve_bare(request_iterator: Any, context: Any, tick_s: float) -> None:
    """Each start answered after `tick_s` with one message: a one-token delta and the end."""
    from tensorchat.v1 import inference_pb2 as pb

    usage = pb.Usage(prompt_tokens=20, completion_tokens=1)
    outbox: asyncio.Queue[pb.GenerateManyResponse] = asyncio.Queue()

    async def answer(request_id: str) -> None:
        await asyncio.sleep(tick_s)
        message = pb.GenerateManyResponse()
        delta = pb.Delta(text=" tok", token_ids=[100])
        message.events.add(request_id=request_id, response=pb.GenerateResponse(delta=delta))
        message.events.add(
            request_id=request_id, response=pb.GenerateResponse(finished=pb.Finished(usage=usage))
        )
        message.events.add(request_id=request_id, end=pb.GenerationEnd())
        outbox.put_nowait(message)

    async def writer() -> None:
        while True:  # grpc.aio allows one write at a time
            await context.write(await outbox.get())

    write_task = asyncio.create_task(writer())
    tasks = set()
    async for request in request_iterator:
        task = asyncio.create_task(answer(request.start.request_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    write_task.cancel()


async def drive_bare(channel: Any, count: int, concurrency: int, jitter_s: float) -> int:
    """`count` requests over one GenerateMany call with the least client code: their tokens."""
    from tensorchat.v1 import inference_pb2 as pb
    from tensorchat.v1 import inference_pb2_grpc as pb_grpc

    call = pb_grpc.InferenceStub(channel).GenerateMany()
    waiting: dict[str, asyncio.Future[int]] = {}
    outbox: asyncio.Queue[pb.GenerateManyRequest] = asyncio.Queue()
    messages = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content=PROMPT)])
    stopping = pb.StoppingCriteria(max_tokens=1)
    counter = iter(range(10**9))
    rng = random.Random(0)

    async def reader() -> None:
        tokens: dict[str, int] = {}
        async for message in call:
            for event in message.events:
                if event.HasField("end"):
                    waiting.pop(event.request_id).set_result(tokens.pop(event.request_id, 0))
                else:
                    n = len(event.response.delta.token_ids)
                    tokens[event.request_id] = tokens.get(event.request_id, 0) + n

    async def writer() -> None:
        while True:
            await call.write(await outbox.get())

    tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
    left, received = [count], [0]

    async def user() -> None:
        while left[0] > 0:
            left[0] -= 1
            await asyncio.sleep(rng.uniform(0, jitter_s))
            request_id = f"req_{next(counter):032d}"
            request = pb.GenerateRequest(
                request_id=request_id, model="m", messages=messages, stopping=stopping
            )
            waiting[request_id] = asyncio.get_running_loop().create_future()
            outbox.put_nowait(pb.GenerateManyRequest(start=request))
            tokens = await waiting[request_id]  # (not `+= await`: that reads before it waits)
            received[0] += tokens

    await asyncio.gather(*(user() for _ in range(concurrency)))
    for task in tasks:
        task.cancel()
    call.cancel()
    return received[0]


async def drive(
    port: int,
    requests: int,
    concurrency: int,
    tokens: int,
    jitter_s: float,
    server_pid: int,
    bare: bool = False,
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

    async def load(n: int) -> None:
        if bare:
            received[0] += await drive_bare(channel, n, concurrency, jitter_s)
        else:
            await users(n)

    await load(concurrency * 20)  # unmeasured: connections, streams, lazy paths
    procs = {"client": psutil.Process(), "server": psutil.Process(server_pid)}

    def cpu() -> dict[str, float]:
        return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}

    before, t0 = cpu(), time.monotonic()
    await load(requests)
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
    server = ctx.Process(target=serve, args=(port, args.tick_ms / 1000, ready, stop, args.bare))
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
                args.bare,
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
    parser.add_argument(
        "--bare",
        action="store_true",
        help="grpc.aio alone, no tensorchat code (needs --tokens 1): the transport's floor",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return 0
    if args.bare and args.tokens != 1:
        parser.error("--bare answers every start with one token: use --tokens 1")
    trees = [t.resolve() for t in args.tree] or [Path(__file__).resolve().parents[1]]
    passed = [
        *(["--bare"] if args.bare else []),
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
