"""RequestWrites: a GenerateMany call's starts and cancels, several per message.

The call is a stand-in whose writes wait until the test lets them through, so what queues
while a write is in flight is the test's to choose (event order, no clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import pytest

from facade.backend_streams import BackendStream
from facade.request_writes import RequestWrites, Written
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb

T = TypeVar("T")


class GatedCall:
    """Records each message as text; each write waits for `release()`; `fail_at` fails one."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.written: list[str] = []
        self.in_flight = asyncio.Event()
        self._gate = asyncio.Semaphore(0)
        self._fail_at = fail_at
        self._done = False
        self._responses: asyncio.Queue[pb.GenerateManyResponse | None] = asyncio.Queue()

    def release(self, writes: int = 1) -> None:
        for _ in range(writes):
            self._gate.release()

    async def write(self, message: pb.GenerateManyRequest) -> None:
        assert not self._done, "a write after the call ended"
        assert "half-close" not in self.written, "a write after the half-close"
        self.in_flight.set()
        await self._gate.acquire()
        self.in_flight.clear()
        if self._fail_at == len(self.written):
            self._done = True
            self.written.append("failed")
            raise asyncio.InvalidStateError("the call has ended")
        self.written.append(describe(message))

    async def done_writing(self) -> None:
        self.written.append("half-close")

    def done(self) -> bool:
        return self._done

    # The response side, for a BackendStream on this call.
    def say_reads_batches(self) -> None:
        self._responses.put_nowait(pb.GenerateManyResponse(reads_batches=True))

    def __aiter__(self) -> GatedCall:
        return self

    async def __anext__(self) -> pb.GenerateManyResponse:
        response = await self._responses.get()
        if response is None:
            raise StopAsyncIteration
        return response

    def cancel(self) -> bool:
        self._done = True
        self._responses.put_nowait(None)
        return True


def describe(message: pb.GenerateManyRequest) -> str:
    action = message.WhichOneof("action")
    if action is not None:
        return f"{action} {message.start.request_id or message.cancel}"
    starts = " ".join(r.request_id for r in message.starts)
    return f"starts {starts} cancels {' '.join(message.cancels)}".strip()


def request(request_id: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id=request_id, model="m")


async def within(awaitable: Awaitable[T]) -> T:
    """A guard, not a timing assertion: a write that never comes fails the test, not hangs it."""
    return await asyncio.wait_for(awaitable, 5)


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def writing(
    first: str, fail_at: int | None = None
) -> tuple[GatedCall, RequestWrites, Written]:
    """Writes to a service that reads batches, with `first`'s start in flight: what is queued
    next waits for the next message."""
    call = GatedCall(fail_at)
    writes = RequestWrites(call)
    writes.batches = True
    written = writes.start(request(first))
    await within(call.in_flight.wait())
    return call, writes, written


async def test_what_queues_during_a_write_goes_out_in_the_next_message() -> None:
    call, writes, first = await writing("r1")
    later = [writes.start(request(r)) for r in ("r2", "r3", "r4")]
    call.release(2)
    assert await within(asyncio.gather(first, *later)) == [None] * 4
    assert call.written == ["start r1", "starts r2 r3 r4 cancels"]


async def test_one_action_per_message_until_the_service_reads_batches() -> None:
    # A service from before batches ignores `starts`: its generations would never start.
    call = GatedCall()
    writes = RequestWrites(call)
    first = writes.start(request("r1"))
    await within(call.in_flight.wait())
    later = [writes.start(request("r2")), writes.start(request("r3"))]
    writes.cancel("r2")
    call.release(4)
    await within(asyncio.gather(first, *later))
    await settled()
    assert call.written == ["start r1", "start r2", "start r3", "cancel r2"]


async def test_a_start_and_its_cancel_share_a_message_but_a_restart_waits() -> None:
    call, writes, _ = await writing("r0")
    writes.start(request("r1"))
    writes.cancel("r1")  # after its start: the service reads a message's starts first
    writes.start(request("r2"))
    writes.cancel("r2")
    restart = writes.start(request("r2"))  # after a cancel of its id: not in that message
    call.release(3)
    await within(restart)
    assert call.written == ["start r0", "starts r1 r2 cancels r1 r2", "start r2"]


async def test_a_failed_batch_fails_the_starts_it_carried_and_nothing_is_written_after() -> None:
    call, writes, first = await writing("r1", fail_at=1)
    carried = [writes.start(request("r2")), writes.start(request("r3"))]
    call.release()
    assert await within(first) is None
    await within(call.in_flight.wait())  # the batch of r2 and r3 is in flight; r4 queues behind it
    queued = writes.start(request("r4"))
    writes.cancel("r1")
    writes.half_close()
    call.release()
    errors = await within(asyncio.gather(*carried, queued))
    assert all(isinstance(e, RequestError) for e in errors)
    assert {e.status for e in errors if e is not None} == {grpc.StatusCode.UNAVAILABLE}
    after = await writes.start(request("r5"))  # the call is gone: at once, without a write
    assert isinstance(after, RequestError)
    await settled()
    assert call.written == ["start r1", "failed"]
    await writes.aclose()


async def test_the_half_close_goes_out_after_every_queued_write() -> None:
    call, writes, _ = await writing("r1")
    writes.cancel("r1")
    writes.half_close()
    late = await writes.start(request("r2"))  # after the half-close: refused, not written
    assert isinstance(late, RequestError)
    call.release(2)
    for _ in range(20):
        await asyncio.sleep(0)
    assert call.written == ["start r1", "cancel r1", "half-close"]


class OneCallStub:
    def __init__(self, call: GatedCall) -> None:
        self._call = call

    def GenerateMany(self) -> GatedCall:
        return self._call


async def test_a_failed_batched_start_fails_exactly_its_generations_and_breaks_the_stream() -> None:
    call = GatedCall(fail_at=1)
    stream = BackendStream(OneCallStub(call), opened_at=0.0)  # type: ignore[arg-type]
    call.say_reads_batches()
    await settled()
    first = asyncio.create_task(stream.start(request("r1"), timeout_s=None))
    await within(call.in_flight.wait())
    batch = [asyncio.create_task(stream.start(request(r), timeout_s=None)) for r in ("r2", "r3")]
    await settled()
    call.release(2)
    ok, *failed = await within(asyncio.gather(first, *batch))
    assert stream.broken
    assert not ok.done() and stream.load == 1  # r1 was written: it runs until the reader ends
    for generation in failed:
        with pytest.raises(RequestError) as raised:
            await within(generation.read())
        assert raised.value.status == grpc.StatusCode.UNAVAILABLE
    assert call.written == ["start r1", "failed"]
    await stream.aclose()
    with pytest.raises(RequestError):
        await within(ok.read())
