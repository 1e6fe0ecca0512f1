#!/usr/bin/env python3
"""`make overload`: does a busy inference service stay in routing, and does everyone get served?

One synthetic-engine replica behind a facade process, two scenarios (not part of `make test`):

- `expensive`: `--heavy` streams of n=16 with top_logprobs 20 saturate the service's event
  loop. Meanwhile a light client starts a 1-token request every 0.5 s (each on its own, not
  waiting for the one before) and a prober times ListModels, the facade's health probe. A
  busy replica must stay routed: every light request is answered 200, however slowly
  (before: the facade took it out of routing when a probe missed its 2 s deadline, and light
  requests got 503 while the heavy streams were served).
- `queued`: the engine runs `--batch` choices at once (`max_batch_size`); `--heavy` requests of
  n=`--batch` queue behind each other for longer than the facade's progress timeout (6 s here).
  The service's `waiting` events must keep them alive: every request 200 (before: the
  watchdog failed them as hung, 503, and took the replica out of routing).

Prints one JSON line per scenario and exits non-zero if any request was not served, or the
facade took the replica out of routing (its `tensorchat_facade_backend_up` gauge, read from
/metrics four times a second, went to 0).
Run from the repository root:  .venv/bin/python benchmarks/overload.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Run as a script: the repository root is what makes `benchmarks.stackbench` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import httpx

from benchmarks.stackbench.plan import API_KEY, MODEL
from benchmarks.stackbench.replicas import write_synthetic_config
from benchmarks.stackbench.servers import start_facade, start_inference
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

# The facade's watchdog in `queued`, short so that it needs no minutes; `expensive` keeps the
# default (30 s): a saturated service delays a stream's events by seconds, and a timeout
# that short would end streams that are only slow (they stay routed either way).
PROGRESS_TIMEOUT_S = 6.0


async def heavy(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """One heavy request; "200", "200+error" (an error event in the stream), its status, or
    the name of the exception it ended with."""
    try:
        async with client.stream("POST", "/chat/completions", json=body, timeout=900) as reply:
            failed = False
            async for line in reply.aiter_lines():
                failed = failed or line.startswith('data: {"error"')
    except httpx.HTTPError as error:
        return type(error).__name__
    return f"{reply.status_code}{'+error' if failed else ''}"


async def one_light(client: httpx.AsyncClient) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    try:
        return str((await client.post("/chat/completions", json=body, timeout=900)).status_code)
    except httpx.HTTPError as error:
        return type(error).__name__


async def light(client: httpx.AsyncClient, stop: asyncio.Event) -> Counter[str]:
    """A light request every 0.5 s until `stop`, each on its own; how they ended."""
    sent: list[asyncio.Task[str]] = []
    while not stop.is_set():
        sent.append(asyncio.create_task(one_light(client)))
        await asyncio.sleep(0.5)
    return Counter(await asyncio.gather(*sent))


async def routed_throughout(metrics_url: str, stop: asyncio.Event) -> bool:
    """Whether the facade kept the replica in routing at every look until `stop`."""
    kept = True
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            text = (await client.get(metrics_url, timeout=30)).text
            up = [
                line
                for line in text.splitlines()
                if line.startswith("tensorchat_facade_backend_up{")
            ]
            kept = kept and bool(up) and all(line.endswith(" 1.0") for line in up)
            await asyncio.sleep(0.25)
    return kept


async def probe(address: str, stop: asyncio.Event) -> float:
    """The slowest ListModels answer while `stop` is unset, in seconds."""
    slowest = 0.0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            await stub.ListModels(pb.ListModelsRequest(), timeout=120)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.25)
    return slowest


async def drive(url: str, address: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    stop = asyncio.Event()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=None)  # the light requests must not queue here
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        prober = asyncio.create_task(probe(address, stop))
        watcher = asyncio.create_task(routed_throughout(url.removesuffix("/v1") + "/metrics", stop))
        lights = asyncio.create_task(light(client, stop))
        started = time.monotonic()
        heavies = await asyncio.gather(*(heavy(client, body) for body in bodies))
        took = time.monotonic() - started
        stop.set()
        light_ends = await lights
        slowest_probe = await prober
        routed = await watcher
    return {
        "heavy": dict(Counter(heavies)),
        "light": dict(sorted(light_ends.items())),
        "slowest_list_models_s": round(slowest_probe, 2),
        "heavy_wall_s": round(took, 1),
        "replica_taken_out": not routed,
    }


def scenario(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    expensive = name == "expensive"
    models = write_synthetic_config(
        work, rate=args.rate, max_batch_size=None if expensive else args.batch
    )
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": args.max_tokens,
        "n": 16 if expensive else args.batch,
        "stream": expensive,
    }
    if expensive:
        body |= {"logprobs": True, "top_logprobs": 20}
    env = {} if expensive else {"TENSORCHAT_PROGRESS_TIMEOUT_S": str(PROGRESS_TIMEOUT_S)}
    with contextlib.ExitStack() as stack:
        _, address = start_inference(stack, models, work, extra_args=["--waiting-interval-s", "1"])
        _, url = start_facade(stack, address, work, env=env)
        result = asyncio.run(drive(url, address, [body] * args.heavy))
    return {"scenario": name, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="expensive,queued")
    parser.add_argument("--heavy", type=int, default=5, help="heavy requests (default 5)")
    parser.add_argument("--max-tokens", type=int, default=3000, help="per choice (default 3000)")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s per choice")
    parser.add_argument("--batch", type=int, default=16, help="`queued`: choices at once")
    args = parser.parse_args()
    served = True
    for name in args.scenarios.split(","):
        with tempfile.TemporaryDirectory() as work:
            result = scenario(name, args, Path(work))
        print(json.dumps(result), flush=True)
        served = (
            served
            and set(result["heavy"]) == {"200"}
            and set(result["light"]) <= {"200"}
            and not result["replica_taken_out"]
        )
    return 0 if served else 1


if __name__ == "__main__":
    sys.exit(main())
