"""A minimal HTTP/1.1 client on asyncio protocols, for measuring at tens of thousands of events/s.

httpx spends its CPU per SSE event in h11, httpcore's pool, anyio streams and one task
wake-up per network read, so at the event rates the stack must carry the client would need
several cores: on a small machine the client, not the server, would be measured. This client
parses the status line, headers and chunked or sized bodies itself and hands body bytes to
the stream recorder straight from `data_received`, with no task switch per read, at a
fraction of the cost (benchmarks/README.md has the figures). It does only what a benchmark
needs: POST, keep-alive connections (one request at a time each), chunked or Content-Length
bodies, plain HTTP or TLS, a timeout.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import cast
from urllib.parse import urlsplit

from tensorchat.bench.chat_stream import StreamRecorder, read_completion, request_body
from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec

# Parser states.
_HEAD, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _SIZED, _UNTIL_CLOSE, _DONE = range(8)


class HttpProtocolError(Exception):
    """The server's response is not HTTP/1.1 this client understands."""


class _Exchange:
    """One request's response as it arrives: status, body bytes, completion."""

    __slots__ = ("body", "done", "keep_alive", "recorder", "status")

    def __init__(self, recorder: StreamRecorder | None, loop: asyncio.AbstractEventLoop) -> None:
        self.recorder = recorder
        self.status = 0
        self.body = bytearray()  # only for unary or error responses
        self.keep_alive = True
        self.done: asyncio.Future[None] = loop.create_future()

    def data(self, chunk: bytes, now: float) -> None:
        if self.recorder is not None and self.status == 200:
            self.recorder.feed(chunk, now)
        else:
            self.body += chunk


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses responses straight out of `data_received`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._exchange: _Exchange | None = None
        self._buffer = b""
        self._state = _DONE
        self._remaining = 0

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self._exchange
        if exchange is not None and not exchange.done.done():
            if self._state == _UNTIL_CLOSE:
                exchange.done.set_result(None)
            else:
                exchange.done.set_exception(exc or ConnectionResetError("connection closed"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        exchange = self._exchange
        if exchange is None:
            return  # bytes after a finished response: ignored (the connection is reused)
        try:
            self._parse(self._buffer + data if self._buffer else data, exchange, now)
        except (HttpProtocolError, ValueError) as exc:
            self._buffer = b""
            if not exchange.done.done():
                exchange.done.set_exception(exc)
            self.abort()

    # requests

    def start(self, request: bytes, exchange: _Exchange) -> None:
        assert self.transport is not None
        self._exchange = exchange
        self._state = _HEAD
        self._buffer = b""
        self.transport.write(request)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # parsing

    def _parse(self, buf: bytes, exchange: _Exchange, now: float) -> None:
        while buf:
            state = self._state
            if state == _CHUNK_DATA:
                if len(buf) <= self._remaining:
                    exchange.data(buf, now)
                    self._remaining -= len(buf)
                    buf = b""
                else:
                    exchange.data(buf[: self._remaining], now)
                    buf = buf[self._remaining :]
                    self._remaining = 0
                if self._remaining == 0:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise HttpProtocolError("chunk not followed by CRLF")
                buf = buf[2:]
                self._state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(buf[:end].split(b";", 1)[0], 16)
                buf = buf[end + 2 :]
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._state, self._remaining = _CHUNK_DATA, size
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                buf = buf[end + 2 :]
                if end == 0:  # the blank line that ends the trailers
                    self._finish(exchange)
                    buf = b""
            elif state == _SIZED:
                take = min(len(buf), self._remaining)
                exchange.data(buf[:take], now)
                self._remaining -= take
                buf = b""
                if self._remaining == 0:
                    self._finish(exchange)
            elif state == _UNTIL_CLOSE:
                exchange.data(buf, now)
                buf = b""
            elif state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                self._head(buf[:end], exchange)
                buf = buf[end + 4 :]
                if self._state == _DONE:
                    self._finish(exchange)
            else:  # _DONE: a finished response; nothing more is expected
                buf = b""
        self._buffer = buf

    def _head(self, head: bytes, exchange: _Exchange) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpProtocolError(f"bad status line {lines[0][:80]!r}")
        exchange.status = int(parts[1])
        chunked = False
        length: int | None = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
            elif name == b"content-length":
                length = int(value)
            elif name == b"connection" and value == b"close":
                exchange.keep_alive = False
            elif name == b"content-encoding" and value not in (b"", b"identity"):
                raise HttpProtocolError(f"compressed responses are not supported ({value!r})")
        if chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._state, self._remaining = (_SIZED, length) if length else (_DONE, 0)
        else:
            self._state = _UNTIL_CLOSE
            exchange.keep_alive = False

    def _finish(self, exchange: _Exchange) -> None:
        self._state = _DONE
        self._exchange = None
        if not exchange.done.done():
            exchange.done.set_result(None)


class RawHttpSender:
    """Sends `RequestSpec`s to `/chat/completions` over a pool of keep-alive connections."""

    def __init__(self, target: Target) -> None:
        url = urlsplit(target.chat_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {url.scheme!r}")
        self._target = target
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = [
            f"POST {path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Content-Type: application/json",
            "Accept: text/event-stream" if target.stream else "Accept: application/json",
            "User-Agent: tensorchat-bench",
        ]
        if target.api_key:
            headers.append(f"Authorization: Bearer {target.api_key}")
        self._head = ("\r\n".join(headers) + "\r\nContent-Length: ").encode()
        self._idle: list[_Connection] = []

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        return conn

    async def send(self, spec: RequestSpec) -> RequestResult:
        body = request_body(self._target, spec)
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        result = RequestResult(start=time.monotonic())
        try:
            async with asyncio.timeout(self._target.timeout_s):
                await self._exchange(request, result)
        except TimeoutError:
            result.ok, result.error = False, "ReadTimeout"
        except (OSError, HttpProtocolError) as exc:
            result.ok, result.error = False, type(exc).__name__
        except ValueError as exc:  # a body that is not the JSON it should be
            result.ok, result.error = False, f"bad_response:{type(exc).__name__}"
        result.end = time.monotonic()
        return result

    async def _exchange(self, request: bytes, result: RequestResult) -> None:
        loop = asyncio.get_running_loop()
        recorder = StreamRecorder(result) if self._target.stream else None
        # A reused connection the server closed while idle fails before any byte of the
        # response; that one case is retried once on a fresh connection.
        for attempt in (0, 1):
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            exchange = _Exchange(recorder, loop)
            conn.start(request, exchange)
            try:
                await exchange.done
            except ConnectionError:
                conn.abort()
                if reused and attempt == 0 and exchange.status == 0:
                    continue
                raise
            except BaseException:
                conn.abort()  # cancelled or timed out mid-response: the connection is unusable
                raise
            break
        if exchange.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn.abort()
        if exchange.status != 200:
            result.error = f"http_{exchange.status}"
        elif recorder is not None:
            recorder.finish()
        else:
            read_completion(json.loads(bytes(exchange.body)), result)
