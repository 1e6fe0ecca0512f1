"""The raw HTTP/1.1 client's response parser: framing split anywhere, errors, keep-alive."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from typing import Any

import pytest

from tensorchat.bench.chat_stream import StreamRecorder
from tensorchat.bench.raw_http import RawHttpSender, _Connection, _Exchange
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target


class Transport:
    """Records writes; stands in for a socket transport."""

    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


def sse(*payloads: Any) -> bytes:
    return b"".join(
        b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n"
        for p in payloads
    )


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in sizes:
        piece = body[i : i + size]
        if not piece:
            break
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        i += size
    if i < len(body):
        out += f"{len(body) - i:x}\r\n".encode() + body[i:] + b"\r\n"
    return out + b"0\r\nx-trailer: 1\r\n\r\n"


BODY = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    *({"choices": [{"index": 0, "delta": {"content": "ab"}}]} for _ in range(5)),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}},
    b"[DONE]",
)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def run_exchange(response: bytes, cuts: list[int]) -> tuple[RequestResult, _Connection]:
    conn = _Connection()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    result = RequestResult(start=0.0)
    exchange = _Exchange(StreamRecorder(result), asyncio.get_running_loop())
    conn.start(b"POST / HTTP/1.1\r\n\r\n", exchange)
    points = [0, *sorted(cuts), len(response)]
    for a, b in itertools.pairwise(points):
        if b > a:
            conn.data_received(response[a:b])
    await asyncio.wait_for(exchange.done, 1)
    return result, conn


async def test_chunked_stream_split_at_random_points_parses_the_same() -> None:
    rng = random.Random(7)
    response = HEAD + chunked(BODY, [40, 3, 200, 1, 90])
    for _ in range(60):
        cuts = [rng.randrange(len(response)) for _ in range(rng.randrange(1, 12))]
        result, conn = await run_exchange(response, cuts)
        assert len(result.chunk_times) == 5
        assert result.output_tokens == 5 and result.prompt_tokens == 4
        assert result.finish_reason == "length"
        assert not conn.closed and conn._exchange is None


async def test_byte_by_byte() -> None:
    response = HEAD + chunked(BODY, [17] * 40)
    result, _ = await run_exchange(response, list(range(1, len(response))))
    assert len(result.chunk_times) == 5


async def test_content_length_body_and_connection_close() -> None:
    body = json.dumps({"error": {"message": "nope"}}).encode()
    response = (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    conn = _Connection()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    exchange = _Exchange(StreamRecorder(RequestResult(start=0.0)), asyncio.get_running_loop())
    conn.start(b"x", exchange)
    conn.data_received(response[:30])
    conn.data_received(response[30:])
    await exchange.done
    assert exchange.status == 429 and bytes(exchange.body) == body
    assert not exchange.keep_alive


async def test_garbage_fails_the_exchange_and_aborts() -> None:
    conn = _Connection()
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    exchange = _Exchange(None, asyncio.get_running_loop())
    conn.start(b"x", exchange)
    conn.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(Exception, match="bad status line"):
        await exchange.done
    assert transport.aborted


async def test_connection_lost_mid_body_is_an_error() -> None:
    conn = _Connection()
    conn.connection_made(Transport())  # type: ignore[arg-type]
    exchange = _Exchange(StreamRecorder(RequestResult(start=0.0)), asyncio.get_running_loop())
    conn.start(b"x", exchange)
    conn.data_received(HEAD + b"5\r\nda")
    conn.connection_lost(None)
    with pytest.raises(ConnectionError):
        await exchange.done


def test_request_head_carries_path_host_and_key() -> None:
    target = Target("http", "http://example:81/base/v1", "m", api_key="k", http_client="raw")
    sender = RawHttpSender(target)
    head = sender._head.decode()
    assert head.startswith("POST /base/v1/chat/completions HTTP/1.1\r\n")
    assert "Host: example:81\r\n" in head and "Authorization: Bearer k\r\n" in head
