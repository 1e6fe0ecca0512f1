"""The facade's HTTP connections against hostile clients: head size, head and body timeouts,
connection cap.

uvicorn's httptools protocol (read in uvicorn 0.55.0, uvicorn/protocols/http/httptools_impl.py)
bounds none of these:

- it feeds every byte to llhttp, which hands a header to Python only once it is complete,
  growing a long one by bytes concatenation (httptools 0.9.0 parser.pyx, `_on_header_value`;
  uvicorn's `on_url` grows the URL the same way): one 150 MB header line cost 25 s of CPU;
- its keep-alive timer is armed only after a response (`on_response_complete`), so a
  connection that never completes a request head stays open for ever (slowloris), and one
  whose body never completes keeps its request waiting in `receive()` for ever;
- `limit_concurrency` answers 503 only once a request head has arrived (`on_headers_complete`),
  so connections that send nothing are never refused.

`GuardedHttpToolsProtocol` adds the four bounds and leaves the parsing and the streaming
to uvicorn. Why not uvicorn's h11 protocol, whose `h11_max_incomplete_event_size` bounds
the head: h11 parses and frames every response event in Python, a cost paid for each
streamed chunk, and it has no head timeout or connection cap either.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from facade.errors import APIError
from facade.request_context import (
    ANSWERED_BY_SERVER,
    RequestRecord,
    new_request_id,
    scope_record,
)
from facade.response_head import HeadHoldingTransport
from facade.settings import FacadeSettings

log = logging.getLogger(__name__)

END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one facade process accepts from HTTP clients (see FacadeSettings for each)."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int  # 0: no cap

    @classmethod
    def from_settings(cls, settings: FacadeSettings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
        )


def server_options(settings: FacadeSettings) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that bound connections and shutdown; every way of serving
    uses them."""
    return {
        "http": functools.partial(
            GuardedHttpToolsProtocol, limits=ConnectionLimits.from_settings(settings)
        ),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        # Streams get this long to finish on SIGTERM before they are cut (facade.generation_run
        # ends those with an error event).
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
    }


class HeadMeter:
    """Counts one request head's bytes and lines as they arrive, up to its blank line.

    It sees the raw bytes before the parser does, so a head over the limits costs no more
    than the limits. Only a chunk's bytes up to the end of the head count: a body in the
    same chunk is the body limit's business (facade/bodylimit.py).
    """

    def __init__(self, max_bytes: int, max_fields: int) -> None:
        self.max_bytes = max_bytes
        self.max_fields = max_fields
        self.restart()

    def restart(self) -> None:
        """Start counting the next request's head."""
        self.size = 0
        self.complete = False
        self._lines = 0
        self._tail = b""  # the last bytes seen, for an end of head split over two chunks

    def feed(self, data: bytes) -> str | None:
        """Count `data`; the refusal message when the head is now over a limit, else None."""
        if self.complete:
            return None
        if not self.size:
            # Empty lines before a request line are allowed (RFC 9112 section 2.2) and
            # skipped by llhttp; counted as the end of a head they would end the count.
            data = data.lstrip(b"\r\n")
        keep = len(END_OF_HEAD) - 1
        # The end of the head may straddle the previous chunk and this one.
        end = (self._tail + data[:keep]).find(END_OF_HEAD)
        if end >= 0:
            head = data[: end + len(END_OF_HEAD) - len(self._tail)]
        else:
            end = data.find(END_OF_HEAD)
            head = data if end < 0 else data[: end + len(END_OF_HEAD)]
        self.complete = end >= 0
        self._tail = (self._tail + head[-keep:])[-keep:]
        self.size += len(head)
        self._lines += head.count(b"\n")
        if self.size > self.max_bytes:
            return (
                f"The request line and headers are larger than the {self.max_bytes} bytes "
                "this server accepts."
            )
        # Lines so far: the request line, one per header field, and the blank line last.
        fields = self._lines - 1 - (1 if self.complete else 0)
        if fields > self.max_fields:
            return (
                f"The request has more than the {self.max_fields} header fields "
                "this server accepts."
            )
        return None


class _Throttled:
    """Logs a repeated warning at most once per `interval_s`, with the count in between."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = -interval_s
        self._since = 0

    def warning(self, message: str, *args: object) -> None:
        self._since += 1
        now = self._clock()
        if now - self._last >= self.interval_s:
            log.warning(message + " (%d since the last report)", *args, self._since)
            self._last, self._since = now, 0


# Per process: under attack, one line every 10 s rather than one per connection.
_refusals = _Throttled(10.0)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded in size, fields and time,
    the request body bounded in time, and a cap on the connections served at once."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._meter = HeadMeter(limits.max_header_bytes, limits.max_headers)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        # Between a request's head and the end of its body. Ours, not uvicorn's
        # `cycle.more_body`, which stays True when the app answered before the body ended.
        self._awaiting_body = False
        self._refused = False

    # Connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self.limits.max_connections
        # Before uvicorn counts this one: `connections` holds those being served.
        if cap and len(self.connections) >= cap:
            self.transport = transport
            self._refuse_connection(cap)
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def _refuse_connection(self, cap: int) -> None:
        _refusals.warning("refused a connection: %d connections are open (the cap)", cap)
        self._refuse(
            APIError(
                503,
                f"The server has {cap} connections open, its limit; retry shortly.",
                headers={"Retry-After": "1"},
            )
        )

    def _refuse(self, error: APIError) -> None:
        """Answer `error` and end the connection; whatever the client sends is dropped."""
        self._refused = True
        self._cancel_head_timer()
        self._cancel_body_timer()
        cycle = self.cycle
        # A cycle cut off from its app (`disconnected`: the body deadline's) sends nothing
        # more, so the answer is ours to write.
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # A pipelined request is refused while the previous response is being sent:
            # an answer now would land inside that response. Such a client gets a close.
            self.transport.close()
            return
        self._write_error(error, None if cycle is None else scope_record(_scope_of(cycle)))
        # Half-close and read on (discarding) for one head timeout, then close: closing with
        # unread input would reset the connection, and a client still sending its request
        # could lose the answer before reading it (nginx's lingering close does the same).
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        if self.flow is not None:
            # uvicorn pauses reading while a body over its high-water mark waits for the
            # app, which will not read it now: without this nothing would be drained.
            self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(
            self.limits.header_timeout_s, self.transport.close
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a refused connection's request is read and dropped, never parsed
        problem = self._meter.feed(data)
        if problem is not None:
            _refusals.warning("refused a request head: %s", problem)
            self._refuse(APIError(431, problem))
            return
        super().data_received(data)
        # Here rather than in on_headers_complete: a body that comes with its head (nearly
        # every request) costs no timer.
        self._watch_body()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request that waits for its body
        self._watch_body()

    # Parser callbacks (llhttp calls them from `data_received`) ---------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A later request on a kept-alive connection gets its own head deadline from its
        # first byte; until then the keep-alive timeout applies.
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._meter.complete = True
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request to answer (not an upgrade)
            self._awaiting_body = True
            # Its task has not run yet: it writes its head with its first body bytes.
            self.cycle.transport = HeadHoldingTransport(  # type: ignore[assignment]
                self.transport, self.loop
            )

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_body = False
        self._cancel_body_timer()
        self._meter.restart()

    # The head deadline -------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's head is late while the previous response is still
            # being sent: finish that response, then close (uvicorn's graceful way).
            self.cycle.keep_alive = False
            return
        if self._meter.size:
            message = (
                f"The request head was not received within {self.limits.header_timeout_s:g} s."
            )
            # A slow client is by definition still sending: the 408 needs the lingering close.
            self._refuse(APIError(408, message))
            return
        self.transport.close()

    # The body deadline ---------------------------------------------------------------------

    def _watch_body(self) -> None:
        """Arms the body deadline for the request being read, once its app runs: one queued
        behind a response (pipelined) is not read until that response ends, so its deadline
        starts when it starts (`on_response_complete`)."""
        if self._awaiting_body and self._body_timer is None and not self.pipeline:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s, self._body_timed_out, self.cycle
            )

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self, cycle: RequestResponseCycle) -> None:
        self._body_timer = None
        if self.transport.is_closing() or cycle is not self.cycle or not self._awaiting_body:
            return
        if cycle.response_started:
            # Answered without the rest of its body (a 413 from Content-Length): there is
            # nothing more to say, and the rest is not worth waiting for.
            self.transport.close()
            return
        error = APIError(
            408, f"The request body was not received within {self.limits.body_timeout_s:g} s."
        )
        # The app, waiting in receive(), gets a disconnect and whatever it sends is dropped:
        # the 408 is the only answer, and the request is counted and logged under it.
        _scope_of(cycle)[ANSWERED_BY_SERVER] = error.status
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(error)

    def _write_error(self, error: APIError, record: RequestRecord | None = None) -> None:
        """An error response written straight to the socket, for a request the app never saw
        or was cut off from (`record`: its id is the response's)."""
        body = error.body()
        lines = [f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}".encode()]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            "connection": "close",
            # As on every response (facade/request_context.py).
            "x-request-id": new_request_id() if record is None else record.request_id,
            **{name.lower(): value for name, value in error.headers.items()},
        }
        lines += [f"{name}: {value}".encode() for name, value in headers.items()]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)


def _scope_of(cycle: RequestResponseCycle) -> Scope:
    # uvicorn types it as the ASGI spec's TypedDict, which admits no key of ours.
    return cast(Scope, cycle.scope)
