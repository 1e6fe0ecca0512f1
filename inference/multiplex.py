"""GenerateMany: many generations over one stream, their messages flushed together.

A front end such as the facade carries hundreds of clients' streams. As separate Generate
calls, every message of every stream costs a gRPC write here and a read there, whatever it
carries (~50-100 µs of CPU on each side, through C-core's and asyncio's threads). On one
GenerateMany stream the messages of all generations share each write: a flush carries what
every generation produced since the previous one, so that cost is paid per flush.

Flushes: an event that starts or ends a generation goes out at once (it is the TTFT or the
end of a request); other deltas wait at most `flush_interval_s` after the previous flush, so
that the generations' paced messages, which are spread over time, share a write. While a
write waits on the reader, events keep collecting for the next one.

Each generation's events are what Generate would stream, then exactly one `GenerationEnd`
with the status Generate would have ended with, so a client can treat them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable

import grpc

from inference.errors import RequestError
from inference.pacing import DEFAULT_FLUSH_INTERVAL_S
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.wakeup import Wakeup

log = logging.getLogger(__name__)

Generations = Callable[[pb.GenerateRequest], AsyncGenerator[pb.GenerateResponse, None]]
Write = Callable[[pb.GenerateManyResponse], Awaitable[None]]


def end_of(error: RequestError) -> pb.GenerationEnd:
    """The GenerationEnd that says what Generate's status and trailing metadata would."""
    return pb.GenerationEnd(
        code=error.status.value[0],
        message=error.message,
        param=error.param or "",
        error_code=error.code or "",
    )


_OK = pb.GenerationEnd(code=grpc.StatusCode.OK.value[0])
_CANCELLED = pb.GenerationEnd(
    code=grpc.StatusCode.CANCELLED.value[0], message="cancelled by the client"
)


class MultiplexSession:
    """One GenerateMany call: starts and cancels generations, writes their events in batches."""

    def __init__(
        self,
        generations: Generations,
        write: Write,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        self._generations = generations
        self._write = write
        self._flush_interval_s = flush_interval_s
        self._pumps: dict[str, asyncio.Task[pb.GenerationEnd]] = {}
        self._cancelled: set[str] = set()  # ids the client cancelled: they end with CANCELLED
        self._events: list[pb.GenerationEvent] = []
        self._urgent = False  # an unwritten event starts or ends a generation
        self._holding = False  # the writer waits for the flush interval to pass
        self._half_closed = False  # the client sends no more requests
        self._draining = False  # the server is stopping
        self._ending = False  # the call is being torn down: no more ends to write
        self._finished = asyncio.Event()  # time to end the call: write what is left, stop
        self._wakeup = Wakeup()
        self._last_flush = -math.inf

    async def run(self, requests: AsyncIterable[pb.GenerateManyRequest]) -> None:
        """Serves the call until every generation has ended and the client half-closed or
        the server drains; then the call ends OK."""
        writer = asyncio.create_task(self._write_events(), name="generate-many-writer")
        # A writer that dies (its call failed) ends the session too.
        writer.add_done_callback(lambda _: self._finished.set())
        reader = asyncio.create_task(self._read_requests(requests), name="generate-many-requests")
        try:
            await self._finished.wait()
            await writer
        finally:
            # The call ended early (the client went away, the server stops): stop everything.
            self._ending = True
            reader.cancel()
            for pump in list(self._pumps.values()):
                pump.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    def drain(self) -> None:
        """The server is stopping: end the call as soon as no generation runs on it."""
        self._draining = True
        self._check_finished()

    async def _read_requests(self, requests: AsyncIterable[pb.GenerateManyRequest]) -> None:
        async for message in requests:
            action = message.WhichOneof("action")
            if action == "start":
                self._start(message.start)
            elif action == "cancel":
                self._cancel(message.cancel)
        self._half_closed = True
        self._check_finished()

    def _check_finished(self) -> None:
        if (self._half_closed or self._draining) and not self._pumps:
            self._finished.set()
            self._wakeup.wake()  # the writer writes what is left, then stops

    def _start(self, request: pb.GenerateRequest) -> None:
        request_id = request.request_id
        if not request_id or request_id in self._pumps:
            reason = "is required" if not request_id else "names a generation already running"
            self._push(
                request_id,
                end=pb.GenerationEnd(
                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                    message=f"request_id: {reason} on this stream",
                    param="request_id",
                ),
            )
            return
        pump = asyncio.create_task(self._pump(request), name=request_id)
        self._pumps[request_id] = pump
        # Bookkeeping in a callback, not in the pump: a pump cancelled before its first step
        # never runs its own code.
        pump.add_done_callback(functools.partial(self._ended, request_id))

    def _cancel(self, request_id: str) -> None:
        pump = self._pumps.get(request_id)
        if pump is not None and not pump.done():
            self._cancelled.add(request_id)
            pump.cancel()

    async def _pump(self, request: pb.GenerateRequest) -> pb.GenerationEnd:
        """Pushes the generation's responses; returns how it ended (cancelled: raises)."""
        request_id = request.request_id
        try:
            first = True
            async with contextlib.aclosing(self._generations(request)) as responses:
                async for response in responses:
                    self._push(request_id, response=response, urgent=first)
                    first = False
        except RequestError as error:
            return end_of(error)
        except Exception:
            # `generations` reports failures as RequestError; this is a bug, but the request
            # must still end, or its reader would wait for ever.
            log.exception("generation %s failed", request_id)
            return pb.GenerationEnd(
                code=grpc.StatusCode.INTERNAL.value[0],
                message=f"internal error while generating (request id {request_id})",
            )
        return _OK

    def _ended(self, request_id: str, pump: asyncio.Task[pb.GenerationEnd]) -> None:
        del self._pumps[request_id]
        cancelled_by_client = request_id in self._cancelled
        self._cancelled.discard(request_id)
        if not pump.cancelled():
            self._push(request_id, end=pump.result())
        elif cancelled_by_client and not self._ending:
            self._push(request_id, end=_CANCELLED)
        self._check_finished()

    def _push(
        self,
        request_id: str,
        *,
        response: pb.GenerateResponse | None = None,
        end: pb.GenerationEnd | None = None,
        urgent: bool = False,
    ) -> None:
        self._events.append(pb.GenerationEvent(request_id=request_id, response=response, end=end))
        urgent = urgent or end is not None
        self._urgent = self._urgent or urgent
        if urgent or not self._holding:
            self._wakeup.wake()

    async def _write_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._events:
                if self._finished.is_set():
                    return
                await self._wakeup.wait(loop)
            release_at = self._last_flush + self._flush_interval_s
            if not self._urgent and loop.time() < release_at:
                self._holding = True
                try:
                    await self._wakeup.wait_until(loop, release_at)
                finally:
                    self._holding = False
            events, self._events = self._events, []
            self._urgent = False
            self._last_flush = loop.time()
            await self._write(pb.GenerateManyResponse(events=events))
