"""A response's head goes out with its first body bytes in one write (facade/response_head.py),
on uvicorn's httptools protocol as the facade serves it (facade/httpguard.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from facade.httpguard import ConnectionLimits, GuardedHttpToolsProtocol
from facade.response_head import HeadHoldingTransport

REQUEST = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """Each write as it reached the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_the_head_waits_for_the_first_body_bytes() -> None:
    transport = RecordingTransport()
    held = HeadHoldingTransport(transport, asyncio.get_running_loop())
    held.write(b"HEAD")
    assert transport.writes == []
    held.write(b"body")
    held.write(b"more")
    assert transport.writes == [b"HEADbody", b"more"]
    await asyncio.sleep(0)  # the end-of-iteration flush finds nothing left to write
    assert transport.writes == [b"HEADbody", b"more"]


async def test_a_head_alone_goes_out_at_the_end_of_the_loop_iteration() -> None:
    transport = RecordingTransport()
    held = HeadHoldingTransport(transport, asyncio.get_running_loop())
    held.write(b"HEAD")
    await asyncio.sleep(0)
    assert transport.writes == [b"HEAD"]
    held.write(b"body")
    assert transport.writes == [b"HEAD", b"body"]


async def test_close_writes_the_held_head_first_and_a_closed_transport_gets_nothing() -> None:
    transport = RecordingTransport()
    held = HeadHoldingTransport(transport, asyncio.get_running_loop())
    held.write(b"HEAD")
    held.close()
    assert transport.writes == [b"HEAD"] and transport.closed
    other = RecordingTransport()
    held = HeadHoldingTransport(other, asyncio.get_running_loop())
    held.write(b"HEAD")
    other.close()  # the connection went away before the iteration ended
    await asyncio.sleep(0)
    assert other.writes == []


async def _two_replies(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"hello", "more_body": False})


async def test_the_facade_protocol_writes_a_short_reply_in_one_write() -> None:
    config = Config(app=_two_replies, access_log=False, log_config=None)
    config.load()
    limits = ConnectionLimits(
        max_header_bytes=8192,
        max_headers=100,
        header_timeout_s=10.0,
        body_timeout_s=30.0,
        max_connections=0,
    )
    protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, limits=limits)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST + REQUEST)  # two pipelined requests
    for _ in range(10):
        await asyncio.sleep(0)
    reply = (
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert transport.writes == [reply, reply]
    protocol.connection_lost(None)
