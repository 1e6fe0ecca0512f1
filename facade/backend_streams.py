"""Chat requests as generations on shared GenerateMany streams (see inference.generate_many).

The facade carries many clients' streams to the same few backends. As one Generate call
each, every message of every stream would cost a gRPC read here (C-core's thread, the
asyncio poller thread, then the event loop); on a GenerateMany stream one read brings the
messages of every generation on it, and a dict lookup hands each to its request. The other
way, one write carries the starts and cancels of many requests (`facade.request_writes`).

A `Generation` reads like the Generate call it replaces: `read()` returns the next
GenerateResponse and then EOF, an end with an error raises it as the `RequestError` the
service raised (`tensorchat.request_error`), and `cancel()` makes a pending read raise
CancelledError and tells the service to stop.

Streams move on. A stream stays on the replica it opened on, so a stream that lived for ever
would keep a scaled-out or restarted inference tier from getting this facade's traffic. After
`StreamLimits.max_age_s` or `max_generations` a stream retires: new generations go to a
fresh stream (which the channel's round_robin places), the ones running on it finish there,
and then it half-closes, so the service ends the call OK (inference.generate_many.Phase).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from facade.request_writes import RequestWrites, stream_ended
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tensorchat.wakeup import Wakeup

log = logging.getLogger(__name__)

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs

# A stream goes to one replica, so a target name that stands for several (dns:///) spreads
# requests over replicas only by spreading them over streams: a request takes a stream of
# its own while there are fewer than this many, and the least loaded one after that. More
# streams also mean more, smaller flushes, so a target that names one server gets one
# (facade.backends.streams_for).
MAX_STREAMS_PER_BACKEND = 4

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class Stalled(RequestError):
    """The UNAVAILABLE a generation ends with when its backend sent it nothing for the progress
    timeout (`Generation.stall`). Retried elsewhere like any UNAVAILABLE before the first byte;
    its replica leaves routing only if none of its streams sent anything for as long (hung,
    not busy: facade/backends.py `BackendPool.stalled`)."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """When a stream stops taking new generations (module docstring); 0: no such limit."""

    max_age_s: float = 60.0
    max_generations: int = 1000

    def spent(self, stream: BackendStream, now: float) -> bool:
        too_old = self.max_age_s > 0 and now - stream.opened_at >= self.max_age_s
        too_many = self.max_generations > 0 and stream.started >= self.max_generations
        return too_old or too_many


class Generation:
    """One request on a GenerateMany stream, read like a Generate call (module docstring)."""

    __slots__ = ("_end", "_responses", "_stream", "_timer", "_wakeup", "last_event", "request_id")

    def __init__(self, stream: BackendStream, request_id: str) -> None:
        self.request_id = request_id
        # Loop time of its start or latest event: the stream's watchdog ends it if too old.
        self.last_event = asyncio.get_running_loop().time()
        self._stream = stream
        self._responses: collections.deque[pb.GenerateResponse] = collections.deque()
        # None while running; then EOF, a RequestError, or CancelledError after cancel().
        self._end: Any = None
        self._wakeup = Wakeup()
        self._timer: asyncio.TimerHandle | None = None

    def done(self) -> bool:
        return self._end is not None

    def cancel(self) -> bool:
        """Stop the generation: a pending read raises CancelledError; False if it had ended."""
        return self._stop(asyncio.CancelledError)

    def _stop(self, end: Any) -> bool:
        """Ends it here and tells the service; as with grpc, nothing more is read."""
        if self._end is not None:
            return False
        self._responses.clear()
        self._finish(end)
        self._stream.cancel(self.request_id)
        return True

    async def read(self) -> Any:
        """The next GenerateResponse, or EOF once the generation ended well."""
        while not self._responses:
            end = self._end
            if end is EOF:
                return EOF
            if end is asyncio.CancelledError:
                raise asyncio.CancelledError
            if end is not None:
                raise end
            await self._wakeup.wait(asyncio.get_running_loop())
        return self._responses.popleft()

    def expire_after(self, timeout_s: float) -> None:
        """End with DEADLINE_EXCEEDED, and stop the service's work, if still running then."""
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._expire)

    def _expire(self) -> None:
        self._stop(RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def stall(self, silent_s: float) -> None:
        """No event for `silent_s`: end it, and stop the service's work, as not run to an end
        there (UNAVAILABLE: retried elsewhere if nothing reached the client)."""
        message = f"the backend sent nothing for this request in {silent_s:g} s"
        self._stop(Stalled(grpc.StatusCode.UNAVAILABLE, message))

    def deliver(self, event: pb.GenerationEvent) -> bool:
        """Takes one event of this generation; True when it was the end."""
        kind = event.WhichOneof("kind")
        if kind == "response":
            self._responses.append(event.response)
            self._wakeup.wake()
            return False
        if kind == "refused":  # its start was refused: this side sends only fresh ids
            self._finish(RequestError.of_end(event.refused))
            return True
        if kind != "end":
            # `waiting` (it waits its turn while its engine works: the reader stamped
            # `last_event`, which is all it is for), or a kind this facade does not know yet.
            return False
        self._finish(EOF if event.end.code == 0 else RequestError.of_end(event.end))
        return True

    def fail(self, error: RequestError) -> None:
        """The stream broke under this generation."""
        if self._end is None:
            self._finish(error)

    def _finish(self, end: Any) -> None:
        self._end = end
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wakeup.wake()


class BackendStream:
    """One GenerateMany call: starts generations on it and hands each event to its reader."""

    def __init__(
        self,
        stub: pb_grpc.InferenceAsyncStub,
        opened_at: float,
        progress_timeout_s: float = 0.0,
    ) -> None:
        # No request iterator: this side writes its messages as requests come.
        self._call = stub.GenerateMany()  # type: ignore[call-arg]  # grpc-stubs require one
        self._generations: dict[str, Generation] = {}
        self._writes = RequestWrites(self._call)  # starts, cancels and the half-close
        self.opened_at = opened_at
        # Loop time of the latest message from the backend (any generation's event, a
        # `waiting` one included): whether the backend is working (`BackendStreams.quiet_for`).
        self.last_message = -math.inf
        self.started = 0  # generations started on it, for StreamLimits
        self.broken = False
        # Takes no new generations: it is spent (StreamLimits), or the backend refused one as
        # UNAVAILABLE (it drains). Half-closed once none runs on it.
        self.retiring = False
        self._reader = asyncio.create_task(self._read_events(), name="generate-many-reader")
        self._watchdog: asyncio.Task[None] | None = None
        if progress_timeout_s > 0:
            self._watchdog = asyncio.create_task(
                self._end_stalled(progress_timeout_s), name="generate-many-watchdog"
            )

    @property
    def load(self) -> int:
        return len(self._generations)

    @property
    def accepting(self) -> bool:
        return not (self.broken or self.retiring)

    @property
    def finished(self) -> bool:
        """The call has ended (its reader is done): nothing more to close."""
        return self._reader.done()

    def retire(self) -> None:
        """No new generations here; the running ones finish, then the call half-closes."""
        self.retiring = True
        self._half_close_if_idle()

    def _half_close_if_idle(self) -> None:
        if not self.retiring or self._generations or self.broken or self._writes.closing:
            return
        self._writes.half_close()  # after the writes queued before it (a cancel's)

    async def start(self, request: pb.GenerateRequest, timeout_s: float | None) -> Generation:
        generation = Generation(self, request.request_id)
        self._generations[request.request_id] = generation
        self.started += 1
        if timeout_s is not None:
            generation.expire_after(timeout_s)
        # Shielded: `written` is RequestWrites' future, which its writer task resolves and
        # which may stand for a write carrying other generations' starts too; the caller's
        # cancellation (its client left) cancels just this generation.
        try:
            error = await asyncio.shield(self._writes.start(request))
        except asyncio.CancelledError:
            generation.cancel()  # the start still goes out, and its cancel after it
            raise
        if error is not None:
            # The call failed (the backend is down or went away): the reader fails the rest.
            self.broken = True
            self._generations.pop(request.request_id, None)
            generation.fail(error)
        return generation

    def cancel(self, request_id: str) -> None:
        if self._generations.pop(request_id, None) is None or self.broken:
            return
        self._writes.cancel(request_id)  # gone with the stream if it failed
        self._half_close_if_idle()

    async def _end_stalled(self, timeout_s: float) -> None:
        """Ends each generation that got no event for `timeout_s` (a hung engine or replica).
        One that waits its turn in a busy engine is not ended: the service sends it a
        `waiting` event every few seconds (inference.defaults.WAITING_INTERVAL_S).

        One sweep a fraction of the timeout apart, rather than a timer reset per event: the
        reader only stamps each generation's `last_event`, at no cost per token.
        """
        loop = asyncio.get_running_loop()
        while not self.broken:
            await asyncio.sleep(min(timeout_s / 4, 1.0))
            too_old = loop.time() - timeout_s
            for generation in [g for g in self._generations.values() if g.last_event < too_old]:
                generation.stall(timeout_s)

    async def _read_events(self) -> None:
        generations = self._generations
        failure: grpc.aio.AioRpcError | None = None
        loop = asyncio.get_running_loop()
        try:
            async for response in self._call:
                if response.reads_batches:  # the service's first message says so (the proto)
                    self._writes.batches = True
                now = self.last_message = loop.time()
                for event in response.events:
                    generation = generations.get(event.request_id)
                    # Events of a generation this side cancelled may still come: drop them.
                    if generation is None:
                        continue
                    generation.last_event = now
                    if generation.deliver(event):
                        del generations[event.request_id]
                        if event.end.code == _UNAVAILABLE:
                            self.retiring = True  # draining: no new generations here
                        self._half_close_if_idle()
        except grpc.aio.AioRpcError as error:
            failure = error
            if error.code() != grpc.StatusCode.CANCELLED:
                log.warning("GenerateMany stream failed: %s %s", error.code().name, error.details())
        finally:
            self.broken = True
            self._call.cancel()  # a no-op unless this task itself was cancelled
            ended = stream_ended(failure)
            self._writes.end(ended)  # the writer would otherwise wait on a dead call for ever
            for generation in generations.values():
                generation.fail(ended)
            generations.clear()

    async def aclose(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        tasks: list[Awaitable[None]] = [self._reader, self._writes.aclose()]
        if self._watchdog is not None:
            self._watchdog.cancel()
            tasks.append(self._watchdog)
        await asyncio.gather(*tasks, return_exceptions=True)


class BackendStreams:
    """The GenerateMany streams to one backend, opened as they are needed and retired when
    spent (module docstring)."""

    def __init__(
        self,
        stub: pb_grpc.InferenceAsyncStub,
        limits: StreamLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_timeout_s: float = 0.0,
        max_streams: int = MAX_STREAMS_PER_BACKEND,
    ) -> None:
        self._stub = stub
        self._max_streams = max_streams
        self._limits = limits or StreamLimits()
        self._clock = clock
        self._progress_timeout_s = progress_timeout_s  # 0: none (see BackendStream)
        # Retiring streams stay listed until their call ends, so that aclose() reaches them.
        self._streams: list[BackendStream] = []

    async def start(self, request: pb.GenerateRequest, timeout_s: float | None) -> Generation:
        """Start `request` (its request_id unique) on the least loaded stream."""
        now = self._clock()
        for spent in self._streams:
            if spent.accepting and self._limits.spent(spent, now):
                spent.retire()
        self._streams = [s for s in self._streams if not s.finished]
        accepting = [s for s in self._streams if s.accepting]
        least = min(accepting, key=_load, default=None)
        if least is None or (least.load and len(accepting) < self._max_streams):
            stream = BackendStream(
                self._stub, opened_at=now, progress_timeout_s=self._progress_timeout_s
            )
            self._streams.append(stream)
        else:
            stream = least
        generation = await stream.start(request, timeout_s)
        if stream.accepting and self._limits.spent(stream, now):
            stream.retire()  # at once: it half-closes as soon as its generations end
        return generation

    @property
    def streams(self) -> list[BackendStream]:
        """Open streams, retiring ones included (for tests and diagnostics)."""
        return [s for s in self._streams if not s.finished]

    @property
    def running(self) -> int:
        """Generations running on this backend's streams."""
        return sum(s.load for s in self._streams if not s.finished)

    def quiet_for(self, now: float) -> float:
        """Seconds (loop time) since any of this backend's streams brought a message; inf
        when none ever did. A backend serving others stays below the progress timeout even
        while one of its generations waits; a hung one does not."""
        return now - max((s.last_message for s in self._streams), default=-math.inf)

    async def aclose(self) -> None:
        await asyncio.gather(*(stream.aclose() for stream in self._streams))
        self._streams = []


def _load(stream: BackendStream) -> int:
    return stream.load
