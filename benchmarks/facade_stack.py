#!/usr/bin/env python3
"""The facade's ASGI stack alone: CPU µs per request, in process, no sockets and no backend.

Each request is a `POST /v1/chat/completions` that passes every middleware, the routing, the
route's authentication (a valid key) and admission's JSON parse, which refuses its body (`{`):
the path of a real request up to its first RPC, without the RPC. A small, quiet figure for
changes to that path (facade/routes/direct.py, facade/app.py), where the end-to-end
benchmarks/facade_overhead.py is too noisy on a shared machine.

`--full` runs the whole short request of request_cpu.py's short phase instead, in process: a
valid chat request (max_tokens 1, 32 at a time) is admitted, started on a GenerateMany
stream, answered and replied to with its 200. The backend is `StandInCall`, which answers
each start in the next loop turn without gRPC, so the figure is the facade's own Python per
request: no HTTP server, sockets or transport. `--floor` puts issue 20's floor app
(benchmarks/stackbench/floor.py) behind the same driver, `--no-access-log` turns the access
log line off.

`--tree DIR` (repeatable) measures other checkouts too, in alternating blocks, each in its own
process (one tree's modules per process):

  .venv/bin/python benchmarks/facade_stack.py --tree /tmp/base --rounds 5
  .venv/bin/python benchmarks/facade_stack.py --full --tree /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
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
    (b"authorization", b"Bearer bench-key"),
]
PROMPT = "Write a short poem about the sea, in the style of a sailor's song. " * 4
FULL_BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1}
).encode()
CONCURRENCY = 32  # request_cpu.py's short phase


class StandInCall:
    """A GenerateMany call without gRPC: each start's one-token answer (delta, finish, end)
    comes back as one message in the next loop turn, as a batched service's would."""

    def __init__(self) -> None:
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self._first = True
        self._cancelled = False

    async def write(self, message: Any) -> None:
        from tensorchat.v1 import inference_pb2 as pb

        starts = list(message.starts) or ([message.start] if message.HasField("start") else [])
        if not starts:
            return  # a cancel: every request here has already ended
        answer = pb.GenerateManyResponse(reads_batches=self._first)
        self._first = False
        usage = pb.Usage(prompt_tokens=20, completion_tokens=1)
        for start in starts:
            delta = pb.Delta(text=" ahoy", token_ids=[100])
            finished = pb.Finished(reason=pb.FINISH_REASON_LENGTH, usage=usage)
            answer.events.add(request_id=start.request_id, response={"delta": delta})
            answer.events.add(request_id=start.request_id, response={"finished": finished})
            answer.events.add(request_id=start.request_id, end=pb.GenerationEnd())
        asyncio.get_running_loop().call_soon(self._answers.put_nowait, answer)

    def __aiter__(self) -> StandInCall:
        return self

    async def __anext__(self) -> Any:
        return await self._answers.get()

    def cancel(self) -> bool:
        self._cancelled = True
        return True

    def done(self) -> bool:
        return self._cancelled

    async def done_writing(self) -> None:
        return None


class StandInStub:
    """What `InferenceStub(channel)` gives the backend pool: one model, stand-in calls."""

    def __init__(self, channel: Any) -> None:
        pass

    def GenerateMany(self) -> StandInCall:
        return StandInCall()

    async def ListModels(self, request: Any, **call_options: Any) -> Any:  # (a timeout)
        from tensorchat.v1 import inference_pb2 as pb

        model = pb.ModelInfo(id="m", engine="synthetic", context_length=4096, created=1)
        return pb.ListModelsResponse(models=[model])


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


async def _drive(app: Any, body: bytes, requests: int, concurrency: int) -> dict[int, int]:
    """`requests` requests through `app`, `concurrency` at a time; the count per status."""
    statuses: dict[int, int] = {}

    async def one() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            if concurrency == 1:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # a client that stays until its reply
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(_scope(body), receive, send)

    left = [requests]

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


async def _measure(requests: int, mode: str, access_log: bool) -> float:
    from facade.app import create_app
    from facade.settings import FacadeSettings

    # The access log line is made (and dropped), as a served request's would be.
    access = logging.getLogger("tensorchat.facade.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.NullHandler())
    access.propagate = False
    if mode != "stack":
        import facade.backends

        facade.backends.pb_grpc.InferenceStub = StandInStub  # type: ignore[misc,assignment]
    settings = FacadeSettings(
        backends=["127.0.0.1:9"], keys_file=None, api_keys=["bench-key"], access_log=access_log
    )
    facade_app = create_app(settings)
    app: Any = facade_app
    if mode == "floor":
        sys.path.insert(0, str(REPO))
        from benchmarks.stackbench.floor import app as floor_app

        app = floor_app(0.0)
    body, concurrency, expected = b"{", 1, 400  # stack: refused by admission's JSON parse
    if mode != "stack":
        body, concurrency, expected = FULL_BODY, CONCURRENCY, 200
    async with facade_app.router.lifespan_context(facade_app):
        await _drive(app, body, min(requests, 3000), concurrency)  # warm up
        started = time.process_time()
        statuses = await _drive(app, body, requests, concurrency)
        cpu = time.process_time() - started
    assert statuses == {expected: requests}, statuses
    return cpu / requests * 1e6


def _child(requests: int, mode: str, access_log: bool) -> None:
    import uvloop

    print(json.dumps({"us": uvloop.run(_measure(requests, mode, access_log))}))


def _block(tree: Path, requests: int, flags: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'build'}"}
    command = [sys.executable, __file__, "--child", "--requests", str(requests), *flags]
    out = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    us: float = json.loads(out.stdout.strip().splitlines()[-1])["us"]
    return us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per tree")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--full", action="store_true", help="the whole short request (docstring)")
    what.add_argument("--floor", action="store_true", help="the floor app, same driver")
    parser.add_argument("--no-access-log", action="store_true", help="no access log line")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode = "full" if args.full else "floor" if args.floor else "stack"
    if args.child:
        _child(args.requests, mode, not args.no_access_log)
        return 0
    flags = [f for f, on in (("--full", args.full), ("--floor", args.floor)) if on]
    flags += ["--no-access-log"] if args.no_access_log else []
    trees = [REPO, *args.tree]
    results: dict[Path, list[float]] = {tree: [] for tree in trees}
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else trees[::-1]
        for tree in order:
            results[tree].append(_block(tree, args.requests, flags))
        print(f"round {round_}: " + ", ".join(f"{t}: {results[t][-1]:.1f}" for t in trees))
    for tree, values in results.items():
        print(f"{tree}: median {statistics.median(values):.1f} µs/request ({len(values)} blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
