"""The request side of one GenerateMany call: starts and cancels, several per message.

gRPC costs the same CPU per message whatever it carries (a write here, a read in the
service), and grpc.aio takes one write at a time. Each start written as its own message, in
turn under a lock, was the facade's largest gRPC cost per short request (issue 20). One
writer task writes everything queued since its previous write in one message instead: what
came while that write was in flight, or in the same turn of the loop; nothing is held on
purpose, so an idle stream's start goes out at once.

The rules this keeps (the proto's order: a message's starts before its cancels):
- actions go out in the order they were queued; a start queued after a cancel of its
  request_id waits for the next message;
- one action per message (the `action` form) until the service said it reads batches
  (`GenerateManyResponse.reads_batches`): a service from before them would ignore a batch;
- a failed write fails exactly the starts it carried; after it nothing more is written (the
  queued starts get the same error, cancels are dropped with the call);
- the half-close goes out after every queued write, and nothing after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.wakeup import Wakeup

# What a start's write came to: None once written, else the error of the call it met.
Written = asyncio.Future[RequestError | None]


def stream_ended(error: grpc.aio.AioRpcError | None) -> RequestError:
    """What a generation still open on a call that ended gets: UNAVAILABLE, whatever the call.

    A GenerateMany call never fails on purpose (a generation's failure is its own end), and
    grpc reports a write that met a dying call as INTERNAL; to the request, it did not run to
    an end on that backend, which is UNAVAILABLE: retried elsewhere if nothing was streamed.
    """
    how = f": {error.code().name} {error.details()}" if error is not None else ""
    return RequestError(grpc.StatusCode.UNAVAILABLE, f"the GenerateMany stream ended{how}")


class _Start:
    __slots__ = ("request", "written")

    def __init__(self, request: pb.GenerateRequest, written: Written) -> None:
        self.request = request
        self.written = written


class RequestWrites:
    """Queues a GenerateMany call's starts and cancels; one task writes them in batches."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: list[_Start | str] = []  # a start, or the request_id of a cancel
        self._writing: list[_Start] = []  # the starts in the write in flight
        self._wakeup = Wakeup()
        self._closing = False
        self._failed: RequestError | None = None
        # Set by the stream's reader once the service said it reads batches.
        self.batches = False
        self._task = asyncio.create_task(self._run(), name="generate-many-writes")

    def start(self, request: pb.GenerateRequest) -> Written:
        """Queues `request`'s start; the future says how its write went."""
        written: Written = asyncio.get_running_loop().create_future()
        if self._failed is not None or self._closing:
            written.set_result(self._failed or stream_ended(None))
        else:
            self._queue.append(_Start(request, written))
            self._wakeup.wake()
        return written

    def cancel(self, request_id: str) -> None:
        """Queues a cancel: after every start queued before it, so after its own start."""
        if self._failed is None and not self._closing:
            self._queue.append(request_id)
            self._wakeup.wake()

    @property
    def closing(self) -> bool:
        """The half-close was asked for: nothing more is queued."""
        return self._closing

    def half_close(self) -> None:
        """Half-closes the call once every queued action was written; nothing more goes out."""
        self._closing = True
        self._wakeup.wake()

    def end(self, error: RequestError) -> None:
        """The call has ended (its reader saw the end): stop writing; queued starts get `error`."""
        self._task.cancel()
        self._fail(error)

    async def aclose(self) -> None:
        """Stops writing (the call is being cancelled); queued starts get the call's end."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._fail(stream_ended(None))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    await self._done_writing()
                    return
                await self._wakeup.wait(loop)
                continue
            self._writing, message = self._take()
            error = await self._write(message)
            for start in self._writing:
                start.written.set_result(error)
            self._writing = []
            if error is not None:
                self._fail(error)
                return

    def _take(self) -> tuple[list[_Start], pb.GenerateManyRequest]:
        """The next message: as many queued actions as it may carry, in order (docstring)."""
        queue = self._queue
        if len(queue) == 1 or not self.batches:
            item = queue.pop(0)
            if isinstance(item, str):
                return [], pb.GenerateManyRequest(cancel=item)
            return [item], pb.GenerateManyRequest(start=item.request)
        starts: list[_Start] = []
        cancels: list[str] = []
        for item in queue:
            if isinstance(item, str):
                cancels.append(item)
            elif cancels and item.request.request_id in cancels:
                break  # the service reads a message's starts first: this one goes next time
            else:
                starts.append(item)
        del queue[: len(starts) + len(cancels)]
        message = pb.GenerateManyRequest(starts=[s.request for s in starts], cancels=cancels)
        return starts, message

    async def _write(self, message: pb.GenerateManyRequest) -> RequestError | None:
        """The call's error if it has ended under the write; None once written."""
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as error:
            return stream_ended(error)
        except asyncio.InvalidStateError:
            return stream_ended(None)
        except asyncio.CancelledError:
            if not self._call.done():
                raise  # this task is being stopped (aclose)
            return stream_ended(None)  # the call was cancelled under the write (shutdown)
        return None

    async def _done_writing(self) -> None:
        # An error means the call already ended: the reader has seen it.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.done_writing()

    def _fail(self, error: RequestError) -> None:
        self._failed = self._failed or error
        for item in [*self._writing, *self._queue]:
            if isinstance(item, _Start) and not item.written.done():
                item.written.set_result(self._failed)
        self._writing = []
        self._queue.clear()
