"""A trivially fast OpenAI-compatible SSE endpoint, to test and calibrate the load generator.

It serves `POST …/chat/completions` from pre-encoded chunks over raw asyncio (HTTP/1.1,
keep-alive, chunked transfer), far cheaper per event than any real facade, so a client
run against it shows what the client itself can receive. Each response carries
`max_tokens` one-token chunks, paced at `tokens_per_second` (0: as fast as possible), then
a usage chunk and `data: [DONE]`. Model names trigger failures for tests: `missing` gives a
404 with the OpenAI error envelope, `broken-stream` an error event mid-stream.

Run it: `python -m tensorchat.bench.fake_server --port 8009 --tokens-per-second 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

_CHUNK_HEAD = b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"fake",'


def _event(payload: bytes) -> bytes:
    body = b"data: " + payload + b"\n\n"
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def _content_event(index: int) -> bytes:
    body = (
        _CHUNK_HEAD
        + b'"choices":[{"index":0,"delta":{"content":" tok'
        + str(index % 10).encode()
        + b'"},"finish_reason":null}]}\n\n'
    )
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


# Ten distinct content events, reused: the server does no per-token encoding work.
_CONTENT = [_content_event(i) for i in range(10)]
_ROLE = _event(
    b'{"id":"chatcmpl-fake","object":"chat.completion.chunk","model":"fake",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
)
_DONE = _event(b"[DONE]") + b"0\r\n\r\n"


class FakeOpenAIServer:
    """Serve fake chat completions on 127.0.0.1:`port` (0 picks a free port)."""

    def __init__(self, port: int = 0, tokens_per_second: float = 0.0) -> None:
        self.port = port
        self.tokens_per_second = tokens_per_second
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                self.bodies.append(body)
                await self._respond(body, writer)
        writer.close()

    async def _respond(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = str(body.get("model", ""))
        tokens = int(body.get("max_tokens") or 16)
        if model == "missing":
            error = {
                "error": {
                    "message": "model not found",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
            payload = json.dumps(error).encode()
            writer.write(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        usage = {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}
        if not body.get("stream"):
            payload = json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " tok" * tokens},
                            "finish_reason": "length",
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n" + _ROLE
        )
        start = time.monotonic()
        interval = 1.0 / self.tokens_per_second if self.tokens_per_second > 0 else 0.0
        for i in range(tokens):
            if model == "broken-stream" and i == tokens // 2:
                writer.write(_event(b'{"error":{"message":"engine fault","type":"server_error"}}'))
                break
            if interval:
                await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
            writer.write(_CONTENT[i % 10])
            if interval or i % 64 == 63:
                await writer.drain()
        else:
            final = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            }
            writer.write(_event(json.dumps(final).encode()))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage_chunk = {"id": "chatcmpl-fake", "choices": [], "usage": usage}
                writer.write(_event(json.dumps(usage_chunk).encode()))
        writer.write(_DONE)
        await writer.drain()


async def _serve_forever(port: int, tokens_per_second: float) -> None:
    server = FakeOpenAIServer(port, tokens_per_second)
    await server.start()
    print(f"fake OpenAI endpoint on {server.url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8009)
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="per stream; 0: max")
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve_forever(args.port, args.tokens_per_second))


if __name__ == "__main__":
    main()
