#!/usr/bin/env python3
"""The facade's ASGI stack alone: CPU µs per request, in process, no sockets and no backend.

Each request is a `POST /v1/chat/completions` that passes every middleware, the routing, the
route's authentication (a valid key) and admission's JSON parse, which refuses its body (`{`):
the path of a real request up to its first RPC, without the RPC. A small, quiet figure for
changes to that path (facade/routes/direct.py, facade/app.py), where the end-to-end
benchmarks/facade_overhead.py is too noisy on a shared machine.

`--tree DIR` (repeatable) measures other checkouts too, in alternating blocks, each in its own
process (one tree's modules per process):

  .venv/bin/python benchmarks/facade_stack.py --tree /tmp/base --rounds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEADERS = [
    (b"host", b"t"),
    (b"content-type", b"application/json"),
    (b"content-length", b"1"),
    (b"authorization", b"Bearer bench-key"),
]


async def _measure(requests: int) -> float:
    from facade.app import create_app
    from facade.settings import FacadeSettings

    # The access log line is written (and dropped), as a served request's would be.
    access = logging.getLogger("tensorchat.facade.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.NullHandler())
    access.propagate = False
    settings = FacadeSettings(backends=["127.0.0.1:9"], keys_file=None, api_keys=["bench-key"])
    app = create_app(settings)
    statuses: set[int] = set()

    async def one() -> None:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "headers": list(HEADERS), "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        messages = [{"type": "http.request", "body": b"{", "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])

        await app(scope, receive, send)

    for _ in range(min(requests, 2000)):  # warm up
        await one()
    started = time.process_time()
    for _ in range(requests):
        await one()
    cpu = time.process_time() - started
    assert statuses == {400}, statuses  # authenticated, then refused by admission's parse
    return cpu / requests * 1e6


def _child(requests: int) -> None:
    import uvloop

    print(json.dumps({"us": uvloop.run(_measure(requests))}))


def _block(tree: Path, requests: int) -> float:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'build'}"}
    command = [sys.executable, __file__, "--child", "--requests", str(requests)]
    out = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    us: float = json.loads(out.stdout.strip().splitlines()[-1])["us"]
    return us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per tree")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.requests)
        return 0
    trees = [REPO, *args.tree]
    results: dict[Path, list[float]] = {tree: [] for tree in trees}
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else trees[::-1]
        for tree in order:
            results[tree].append(_block(tree, args.requests))
        print(f"round {round_}: " + ", ".join(f"{t}: {results[t][-1]:.1f}" for t in trees))
    for tree, values in results.items():
        print(f"{tree}: median {statistics.median(values):.1f} µs/request ({len(values)} blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
