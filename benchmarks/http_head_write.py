#!/usr/bin/env python3
"""Server CPU per short reply with and without facade/response_head.py's held head.

Two uvicorn servers with the facade's HTTP protocol (facade/httpguard.py server_options) and a
canned JSON reply (`http.response.start`, then one body message), one of them writing the head
on its own as uvicorn does; 32 keep-alive connections send requests to each in alternating
blocks, and each server's CPU time (psutil, user + system) per request is printed.

  .venv/bin/python benchmarks/http_head_write.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
BODY = b'{"ok":true,"x":"' + b"a" * 200 + b'"}'


def serve(port: int, hold: bool) -> None:
    import uvicorn
    import uvloop

    import facade.httpguard
    from facade.httpguard import server_options
    from facade.settings import FacadeSettings

    if not hold:
        facade.httpguard.HeadHoldingTransport = lambda transport, loop: transport  # type: ignore[assignment,misc]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    config = uvicorn.Config(
        app, port=port, log_level="warning", access_log=False, lifespan="off",
        **server_options(FacadeSettings()),
    )  # fmt: skip
    uvloop.run(uvicorn.Server(config).serve())


async def drive(port: int, requests: int, concurrency: int) -> None:
    async def user() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(requests // concurrency):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1] == "hold")
        return 0
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO}/build"}
    servers = {
        mode: (port, psutil.Popen([sys.executable, __file__, "--serve", str(port), mode], env=env))
        for mode, port in (("hold", 18731), ("own-write", 18732))
    }
    try:
        time.sleep(3)
        cpu: dict[str, list[float]] = {mode: [] for mode in servers}
        for round_ in range(args.rounds):
            for mode in sorted(servers, reverse=bool(round_ % 2)):
                port, proc = servers[mode]
                asyncio.run(drive(port, 200, 8))  # warm up
                before = sum(proc.cpu_times()[:2])
                asyncio.run(drive(port, args.requests, 32))
                cpu[mode].append((sum(proc.cpu_times()[:2]) - before) / args.requests * 1e6)
        for mode, values in cpu.items():
            blocks = ", ".join(f"{v:.1f}" for v in values)
            print(f"{mode}: median {statistics.median(values):.1f} µs/request ({blocks})")
    finally:
        for _, proc in servers.values():
            proc.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
