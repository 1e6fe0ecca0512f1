"""The floor: the least an OpenAI chat endpoint in Python can cost per request (issue 20).

A bare Starlette app on uvicorn with httptools and uvloop, access log off, one POST route,
`/v1/chat/completions`: it reads the body, `json.loads` it and answers a canned
`chat.completion` (stream false) or, with stream true, one SSE chunk per token (`max_tokens`
of them, paced at `--tokens-per-second` per stream like the synthetic engine), a finish
chunk, the usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`.
The chunks have the OpenAI shape `tensorchat.bench` parses, so the same client drives the
floor and the facade and the client's side of each comparison is equal; what is left is
what the server does. Unlike `tensorchat.bench.fake_server` (raw asyncio, there to show
what the client can take), this is the framework stack a real facade could at best be.

Run it: `python -m benchmarks.stackbench.floor --port 8010 --tokens-per-second 100`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_ID = "chatcmpl-floor"
_DONE = b"data: [DONE]\n\n"


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": _ID, "object": "chat.completion.chunk", "model": "floor", "choices": [choice]}


# Ten distinct content events, encoded once: the floor does no per-token encoding work.
_CONTENT = [_event(_chunk({"content": f" tok{i}"})) for i in range(10)]
_FINISH = _event(_chunk({}, "length"))


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}


@functools.lru_cache(maxsize=64)
def _completion(tokens: int) -> bytes:
    message = {"role": "assistant", "content": " tok" * tokens}
    return json.dumps(
        {
            "id": _ID,
            "object": "chat.completion",
            "model": "floor",
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": _usage(tokens),
        }
    ).encode()


@functools.lru_cache(maxsize=64)
def _usage_event(tokens: int) -> bytes:
    return _event(
        {"id": _ID, "object": "chat.completion.chunk", "choices": [], "usage": _usage(tokens)}
    )


async def _tokens(tokens: int, interval: float, usage: bool) -> AsyncIterator[bytes]:
    # Token k is due at start + k * interval (the first at once), as the synthetic engine
    # paces a stream; sleeping to an absolute schedule keeps late wake-ups from adding up.
    start = time.monotonic()
    for k in range(tokens):
        if interval:
            await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
        yield _CONTENT[k % 10]
    yield _FINISH
    if usage:
        yield _usage_event(tokens)
    yield _DONE


def app(tokens_per_second: float) -> Starlette:
    """The floor's ASGI app; streams paced at `tokens_per_second` (0: as fast as possible)."""
    interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    async def chat_completions(request: Request) -> Response:
        body = json.loads(await request.body())
        tokens = int(body.get("max_tokens") or 16)
        if not body.get("stream"):
            return Response(_completion(tokens), media_type="application/json")
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_tokens(tokens, interval, usage), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def config(port: int, tokens_per_second: float) -> uvicorn.Config:
    return uvicorn.Config(
        app(tokens_per_second),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        lifespan="off",
        log_level="warning",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument(
        "--tokens-per-second", type=float, default=100.0, help="per stream; 0: as fast as possible"
    )
    args = parser.parse_args()
    uvicorn.Server(config(args.port, args.tokens_per_second)).run()


if __name__ == "__main__":
    main()
