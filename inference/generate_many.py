"""GenerateMany: many requests over one stream, their events written in batches.

One write carries what every generation on the stream produced since the previous one, so
gRPC's per-message cost (a write here, a read in the facade) is paid per write, not per
message of every request (docs/architecture.md). An event that starts or ends a generation
goes out at once; other deltas wait at most `flush_interval_s` (`inference.pacing.Hold`).
Each generation gets what Generate would stream, then exactly one `GenerationEnd` (`_ended`);
a start refused before it ran (no request_id, or one already running here) gets a `refused`
event instead. `Phase` says when the call ends.

A generation that has sent nothing yet gets a `waiting` event every `WAITING_INTERVAL_S` while
its engine generates for others (`_report_waiting`): queued behind a full batch it may send
nothing for minutes, and the facade's watchdog would otherwise take it for a hung engine, end
it and take the replica out of routing (measured: 4 requests of n=16 on the embedded model,
two of them 503 after 30 s in the queue). An engine that generates nothing gets no such
events, so a hung one is still found. A generation lost inside a service whose engine goes on
working for others is not: it hears `waiting` until its client leaves, or its time limit
(the facade's TENSORCHAT_REQUEST_TIME_LIMIT_S) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable

import grpc

from inference.defaults import WAITING_INTERVAL_S
from inference.errors import RequestError, invalid
from inference.pacing import DEFAULT_FLUSH_INTERVAL_S, Hold
from tensorchat.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

# What runs one request: its responses, or a RequestError saying how it failed.
RunRequest = Callable[[pb.GenerateRequest], AsyncGenerator[pb.GenerateResponse, None]]
Write = Callable[[pb.GenerateManyResponse], Awaitable[None]]
# The output tokens the engine serving a model name has generated so far (a counter that
# moves while it works); None for a name no engine serves.
EngineProgress = Callable[[str], "int | None"]

# A write in flight waits on the client (gRPC's flow control: a facade that reads slower than
# the engines write). Meanwhile the next write's events pile up; past this many a generation
# stops taking responses until the writer takes them, and its engine channel merges what
# comes meanwhile (inference/engines/channel.py), so memory stays bounded. Far above what
# a write carries at full load (about 26 events at 6,400 messages/s and 4 ms).
MAX_PENDING_EVENTS = 4096
# gRPC refuses a message over its limit (MAX_MESSAGE_BYTES, inference/server.py) and that ends
# the whole call, every generation on it: a larger write goes out in parts of at most this.
MAX_WRITE_BYTES = 16 * 1024 * 1024

_OK = pb.GenerationEnd(code=grpc.StatusCode.OK.value[0])
_CANCELLED = pb.GenerationEnd(
    code=grpc.StatusCode.CANCELLED.value[0], message="cancelled by the client"
)
_WAITING = pb.Waiting()


class Phase(enum.Enum):
    """A session's life; it only moves forward (see `GenerateManySession._enter`)."""

    SERVING = 1  # takes requests
    CLOSING = 2  # the client half-closed or the server drains: ends once no generation runs
    FLUSHING = 3  # none runs: the writer writes what is left, then the call ends OK
    ENDED = 4  # torn down (also early: the client went away): nothing more is written


class GenerateManySession:
    """One GenerateMany call: starts and cancels generations, writes their events in batches."""

    def __init__(
        self,
        run_request: RunRequest,
        write: Write,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        engine_progress: EngineProgress | None = None,
        waiting_interval_s: float = WAITING_INTERVAL_S,
    ) -> None:
        self._run_request = run_request
        self._write = write
        self._flush_interval_s = flush_interval_s
        self._engine_progress = engine_progress  # None: no `waiting` events
        self._waiting_interval_s = waiting_interval_s
        self._pumps: dict[str, asyncio.Task[pb.GenerationEnd]] = {}  # running generations
        # Running generations that have sent nothing yet: request_id -> model name.
        self._silent: dict[str, str] = {}
        self._cancelled: set[str] = set()  # ids the client cancelled: they end with CANCELLED
        # The next write, built in place: a submessage passed to a constructor is copied
        # (upb), so building each event on its own and then the message copied every
        # response twice; `events.add` copies it once (2.4 -> 0.8 µs per event).
        # The first one tells the client that this server reads batched requests (the proto).
        self._message = pb.GenerateManyResponse(reads_batches=True)
        self._hold = Hold()
        self._room = asyncio.Event()  # set when the writer takes the pending events
        self._phase = Phase.SERVING

    async def run(self, requests: AsyncIterable[pb.GenerateManyRequest]) -> None:
        """Serves the call until every generation has ended and the client half-closed or
        the server drains; then the call ends OK."""
        writer = asyncio.create_task(self._write_events(), name="generate-many-writer")
        reader = asyncio.create_task(self._read_requests(requests), name="generate-many-requests")
        tasks = [reader, writer]
        if self._engine_progress is not None:
            reporter = self._report_waiting(self._engine_progress)
            tasks.append(asyncio.create_task(reporter, name="generate-many-waiting"))
        try:
            await writer  # it returns once FLUSHING wrote everything; it fails with the call
        finally:
            # Also when the call ended early (the client went away, the server stops).
            self._enter(Phase.ENDED)
            for pump in list(self._pumps.values()):
                pump.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """No more requests come (the client half-closed) or are wanted (the server drains):
        end the call once no generation runs on it."""
        self._enter(Phase.CLOSING if self._pumps else Phase.FLUSHING)

    def _enter(self, phase: Phase) -> None:
        """The one transition; phases only move forward."""
        if phase.value <= self._phase.value:
            return
        self._phase = phase
        if phase is Phase.FLUSHING:
            self._hold.stop()  # the writer writes what is left, then stops

    async def _read_requests(self, requests: AsyncIterable[pb.GenerateManyRequest]) -> None:
        async for message in requests:
            # The proto's order: the single action, then the batch's starts, then its cancels
            # (so a start and its cancel may share a message).
            action = message.WhichOneof("action")
            if action == "start":
                self._start(message.start)
            elif action == "cancel":
                self._cancel(message.cancel)
            for request in message.starts:
                self._start(request)
            for request_id in message.cancels:
                self._cancel(request_id)
        self.close()

    def _start(self, request: pb.GenerateRequest) -> None:
        request_id = request.request_id
        if not request_id or request_id in self._pumps:
            reason = "is required" if not request_id else "names a generation already running"
            # `refused`, not `end`: an end under this id would read as the running one's.
            refusal = invalid("request_id", f"{reason} on this stream").end()
            self._push(request_id, refused=refusal)
            return
        pump = asyncio.create_task(self._pump(request), name=request_id)
        self._pumps[request_id] = pump
        self._silent[request_id] = request.model
        # Bookkeeping in a callback, not in the pump: a pump cancelled before its first step
        # never runs its own code, but its callbacks run exactly once.
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
            async with contextlib.aclosing(self._run_request(request)) as responses:
                async for response in responses:
                    self._push(request_id, response=response, urgent=first)
                    if first:
                        del self._silent[request_id]
                        first = False
                    while len(self._message.events) >= MAX_PENDING_EVENTS:
                        self._room.clear()
                        await self._room.wait()
        except RequestError as error:
            return error.end()
        except Exception:
            # `run_request` reports failures as RequestError; this is a bug, but the request
            # must still end, or its reader would wait for ever.
            log.exception("generation %s failed", request_id)
            return pb.GenerationEnd(
                code=grpc.StatusCode.INTERNAL.value[0],
                message=f"internal error while generating (request id {request_id})",
            )
        return _OK

    def _ended(self, request_id: str, pump: asyncio.Task[pb.GenerationEnd]) -> None:
        """Ends a started generation (once: its pump's done callback)."""
        del self._pumps[request_id]
        self._silent.pop(request_id, None)
        cancelled_by_client = request_id in self._cancelled
        self._cancelled.discard(request_id)
        if not pump.cancelled():
            self._push(request_id, end=pump.result())
        elif cancelled_by_client and self._phase is not Phase.ENDED:
            self._push(request_id, end=_CANCELLED)
        if self._phase is Phase.CLOSING and not self._pumps:
            self._enter(Phase.FLUSHING)

    def _push(
        self,
        request_id: str,
        *,
        response: pb.GenerateResponse | None = None,
        end: pb.GenerationEnd | None = None,
        refused: pb.GenerationEnd | None = None,
        waiting: pb.Waiting | None = None,
        urgent: bool = False,
    ) -> None:
        events = self._message.events
        if response is not None:
            events.add(request_id=request_id, response=response)
        elif end is not None:
            events.add(request_id=request_id, end=end)
            urgent = True
        elif refused is not None:
            events.add(request_id=request_id, refused=refused)
            urgent = True
        else:
            events.add(request_id=request_id, waiting=waiting)
        self._hold.added(urgent=urgent)

    async def _report_waiting(self, engine_progress: EngineProgress) -> None:
        """Each round, a `waiting` event for every silent generation whose engine generated
        tokens since the previous round (module docstring)."""
        previous: dict[str, int | None] = {}  # model name -> its engine's count last round
        while True:
            await asyncio.sleep(self._waiting_interval_s)
            try:
                counts = {model: engine_progress(model) for model in set(self._silent.values())}
            except Exception:
                # An engine that cannot say must not end the reports of every other
                # generation on the stream: their watchdog would take them for hung.
                log.exception("reading engine progress for waiting generations failed")
                continue
            for request_id, model in self._silent.items():
                count = counts[model]
                # A model first seen this round has no previous count: it waits a round.
                if count is not None and previous.get(model) not in (None, count):
                    self._push(request_id, waiting=_WAITING)
            previous = counts

    async def _write_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._hold.until_due(loop, self._flush_interval_s)
            if not self._message.events:
                return  # flushing, and everything was written
            message, self._message = self._message, pb.GenerateManyResponse()
            self._hold.taken(loop)
            self._room.set()
            for part in _parts(message, MAX_WRITE_BYTES):
                await self._write(part)


def _parts(message: pb.GenerateManyResponse, max_bytes: int) -> list[pb.GenerateManyResponse]:
    """`message` as writes of at most `max_bytes` each (one event larger than that goes
    alone), its events in order and its flags on the first."""
    if message.ByteSize() <= max_bytes:
        return [message]
    parts = [pb.GenerateManyResponse(reads_batches=message.reads_batches)]
    size = 0
    for event in message.events:
        event_bytes = event.ByteSize() + 8  # the field's tag and length prefix, at most
        if size and size + event_bytes > max_bytes:
            parts.append(pb.GenerateManyResponse())
            size = 0
        parts[-1].events.append(event)
        size += event_bytes
    return parts
