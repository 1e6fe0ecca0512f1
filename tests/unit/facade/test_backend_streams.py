"""A Generation on a GenerateMany stream reads like the Generate call it replaces.

The stream here only records cancels; the facade's integration tests run the real streams
against the real service (cancellation, failover, errors).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from facade.backend_streams import EOF, BackendStream, BackendStreams, Generation, StreamLimits
from facade.errors import from_request_error
from tensorchat.request_error import RequestError
from tensorchat.v1 import inference_pb2 as pb


class CancelLog:
    """Stands in for the BackendStream: what a Generation asks of it is `cancel(id)`."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)


def generation(cancels: CancelLog) -> Generation:
    stream: BackendStream = cancels  # type: ignore[assignment]
    return Generation(stream, "r1")


def response(text: str) -> pb.GenerationEvent:
    return pb.GenerationEvent(
        request_id="r1", response=pb.GenerateResponse(delta=pb.Delta(text=text))
    )


def end(**fields: object) -> pb.GenerationEvent:
    return pb.GenerationEvent(request_id="r1", end=pb.GenerationEnd(**fields))  # type: ignore[arg-type]


async def test_responses_then_eof_after_an_ok_end() -> None:
    gen = generation(CancelLog())
    reader = asyncio.create_task(gen.read())
    await asyncio.sleep(0)
    assert not gen.deliver(response("a"))
    assert (await reader).delta.text == "a"
    gen.deliver(response("b"))
    assert gen.deliver(end(code=0))
    assert gen.done()
    assert (await gen.read()).delta.text == "b"  # what came before the end is still read
    assert await gen.read() is EOF
    assert await gen.read() is EOF


async def error_after(**end_fields: object) -> RequestError:
    """What reading a generation that ended this way raises."""
    gen = generation(CancelLog())
    gen.deliver(end(**end_fields))
    with pytest.raises(RequestError) as raised:
        await gen.read()
    return raised.value


async def test_a_failed_end_raises_what_generate_would_and_maps_to_the_same_envelope() -> None:
    error = await error_after(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="temperature: must be at most 2",
        param="temperature",
    )
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "temperature: must be at most 2"
    api_error = from_request_error(error, "r1", "m")
    assert (api_error.status, api_error.param) == (400, "temperature")
    assert api_error.message == "Invalid 'temperature': must be at most 2"


async def test_the_error_code_travels_as_generate_trailing_metadata_does() -> None:
    error = await error_after(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message="The server is at capacity",
        error_code="server_overloaded",
    )
    api_error = from_request_error(error, "r1", "m")
    assert (api_error.status, api_error.code) == (429, "server_overloaded")


async def test_a_refused_start_ends_the_generation_with_the_refusal() -> None:
    gen = generation(CancelLog())
    refusal = pb.GenerationEnd(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="request_id: ...",
        param="request_id",
    )
    assert gen.deliver(pb.GenerationEvent(request_id="r1", refused=refusal))
    with pytest.raises(RequestError) as raised:
        await gen.read()
    assert (raised.value.status, raised.value.param) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    )


async def test_cancel_interrupts_a_pending_read_and_tells_the_stream_once() -> None:
    cancels = CancelLog()
    gen = generation(cancels)
    reader = asyncio.create_task(gen.read())
    await asyncio.sleep(0)
    assert gen.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    with pytest.raises(asyncio.CancelledError):
        await gen.read()
    assert not gen.cancel()
    assert cancels.cancelled == ["r1"]


async def test_cancel_after_the_end_does_nothing() -> None:
    cancels = CancelLog()
    gen = generation(cancels)
    gen.deliver(end(code=0))
    assert not gen.cancel()
    assert cancels.cancelled == []


async def test_the_deadline_ends_it_with_deadline_exceeded_and_stops_the_service() -> None:
    cancels = CancelLog()
    gen = generation(cancels)
    gen.expire_after(0.01)
    with pytest.raises(RequestError) as raised:
        await asyncio.wait_for(gen.read(), 2)
    assert raised.value.status == grpc.StatusCode.DEADLINE_EXCEEDED
    assert cancels.cancelled == ["r1"]


async def test_an_end_before_the_deadline_cancels_the_timer() -> None:
    cancels = CancelLog()
    gen = generation(cancels)
    gen.expire_after(0.01)
    gen.deliver(end(code=0))
    await asyncio.sleep(0.03)
    assert await gen.read() is EOF
    assert cancels.cancelled == []


async def test_a_broken_stream_fails_the_reader_with_its_error() -> None:
    gen = generation(CancelLog())
    reader = asyncio.create_task(gen.read())
    await asyncio.sleep(0)
    gen.fail(RequestError(grpc.StatusCode.UNAVAILABLE, "gone"))
    with pytest.raises(RequestError) as raised:
        await reader
    assert raised.value.status == grpc.StatusCode.UNAVAILABLE


class FakeManyCall:
    """A GenerateMany call whose writes wait until the test lets them through."""

    def __init__(self) -> None:
        self.written: list[pb.GenerateManyRequest] = []
        self.cancelled = False
        self.gate = asyncio.Event()
        self._ended = asyncio.Event()

    async def write(self, message: pb.GenerateManyRequest) -> None:
        await self.gate.wait()
        self.written.append(message)

    def __aiter__(self) -> FakeManyCall:
        return self

    async def __anext__(self) -> pb.GenerateManyResponse:
        await self._ended.wait()
        raise StopAsyncIteration

    def cancel(self) -> bool:
        self.cancelled = True
        self._ended.set()
        return True


class FakeStub:
    def __init__(self, call: FakeManyCall) -> None:
        self._call = call

    def GenerateMany(self) -> FakeManyCall:
        return self._call


async def test_a_start_cancelled_mid_write_cancels_only_its_generation() -> None:
    # grpc.aio cancels the whole call when a write is cancelled half-way; a client leaving
    # while its start is being written must not take the other generations with it.
    call = FakeManyCall()
    stream = BackendStream(FakeStub(call), opened_at=0.0)  # type: ignore[arg-type]
    request = pb.GenerateRequest(request_id="r1", model="m")
    starting = asyncio.create_task(stream.start(request, timeout_s=None))
    await asyncio.sleep(0.01)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    call.gate.set()
    for _ in range(100):
        if len(call.written) == 2:
            break
        await asyncio.sleep(0.001)
    assert [m.WhichOneof("action") for m in call.written] == ["start", "cancel"]
    assert call.written[1].cancel == "r1"
    assert not call.cancelled and not stream.broken
    assert stream.load == 0
    await stream.aclose()


class ServedCall:
    """A GenerateMany call answered by the test: writes are recorded, `end(id)` ends a
    generation, and a half-close ends the call OK, as the service does once none runs."""

    def __init__(self) -> None:
        self.written: list[str] = []  # "start r1", "cancel r1", "half-close"
        self.cancelled = False
        self.ended = False
        self._inbox: asyncio.Queue[pb.GenerateManyResponse | None] = asyncio.Queue()

    async def write(self, message: pb.GenerateManyRequest) -> None:
        assert "half-close" not in self.written, "a write after the half-close"
        action = message.WhichOneof("action")
        self.written.append(f"start {message.start.request_id}" if action == "start" else
                            f"cancel {message.cancel}")  # fmt: skip

    async def done_writing(self) -> None:
        self.written.append("half-close")
        self._inbox.put_nowait(None)

    def end(self, request_id: str) -> None:
        event = pb.GenerationEvent(request_id=request_id, end=pb.GenerationEnd(code=0))
        self._inbox.put_nowait(pb.GenerateManyResponse(events=[event]))

    def __aiter__(self) -> ServedCall:
        return self

    async def __anext__(self) -> pb.GenerateManyResponse:
        response = await self._inbox.get()
        if response is None:
            self.ended = True
            raise StopAsyncIteration
        return response

    def cancel(self) -> bool:
        if self.ended:
            return False  # as grpc.aio: cancelling an ended call does nothing
        self.cancelled = True
        self._inbox.put_nowait(None)
        return True


class ServedStub:
    """Opens a new ServedCall per GenerateMany call (a new stream, as round_robin places it)."""

    def __init__(self) -> None:
        self.calls: list[ServedCall] = []

    def GenerateMany(self) -> ServedCall:
        self.calls.append(ServedCall())
        return self.calls[-1]


def streams_of(
    stub: ServedStub, limits: StreamLimits, clock: list[float], max_streams: int = 4
) -> BackendStreams:
    return BackendStreams(stub, limits, clock=lambda: clock[0], max_streams=max_streams)  # type: ignore[arg-type]


async def start(streams: BackendStreams, request_id: str) -> Generation:
    return await streams.start(pb.GenerateRequest(request_id=request_id, model="m"), None)


async def settled() -> None:
    for _ in range(5):  # the reader and the spawned writes take a few loop turns
        await asyncio.sleep(0)


@pytest.mark.parametrize(("max_streams", "starts_per_stream"), [(4, [1, 1, 1, 2]), (1, [5])])
async def test_concurrent_generations_take_streams_of_their_own_up_to_max_streams(
    max_streams: int, starts_per_stream: list[int]
) -> None:
    stub = ServedStub()
    streams = streams_of(stub, StreamLimits(), [0.0], max_streams=max_streams)
    for i in range(5):  # all running at once: each takes a fresh stream while it may, then
        await start(streams, f"r{i}")  # the least loaded one
    await settled()
    assert sorted(len(call.written) for call in stub.calls) == starts_per_stream
    assert all(entry.startswith("start ") for call in stub.calls for entry in call.written)
    await streams.aclose()


async def test_a_call_the_service_ends_stops_its_writer_too() -> None:
    stub = ServedStub()
    streams = streams_of(stub, StreamLimits(), [0.0])
    generation_ = await start(streams, "r1")
    stub.calls[0].cancel()  # the service ended the call (a crash, or a drain's end)
    with pytest.raises(RequestError):
        await generation_.read()
    await settled()
    writers = [t for t in asyncio.all_tasks() if t.get_name() == "generate-many-writes"]
    assert writers == []  # nothing left waiting on the dead call
    await streams.aclose()


async def test_a_stream_retires_after_max_generations_once_its_last_one_ends() -> None:
    stub, clock = ServedStub(), [0.0]
    streams = streams_of(stub, StreamLimits(max_age_s=0, max_generations=2), clock)
    first = await start(streams, "r1")
    stub.calls[0].end("r1")
    assert await first.read() is EOF
    second = await start(streams, "r2")  # the second and last on this stream
    third = await start(streams, "r3")  # so this one opens a fresh stream
    assert len(stub.calls) == 2 and stub.calls[1].written == ["start r3"]
    await settled()
    assert stub.calls[0].written == ["start r1", "start r2"]  # r2 still runs: not closed
    stub.calls[0].end("r2")
    assert await second.read() is EOF  # nothing lost: it finished on the retired stream
    await settled()
    assert stub.calls[0].written[-1] == "half-close" and not stub.calls[0].cancelled
    assert streams.streams == [s for s in streams.streams if s.accepting]  # the old one is gone
    assert not third.done()
    await streams.aclose()


async def test_a_stream_retires_after_max_age_on_the_clock() -> None:
    stub, clock = ServedStub(), [100.0]
    streams = streams_of(stub, StreamLimits(max_age_s=30, max_generations=0), clock)
    for request_id, now in (("r1", 100.0), ("r2", 129.0)):
        clock[0] = now
        generation_ = await start(streams, request_id)
        assert len(stub.calls) == 1  # not yet 30 s old
        stub.calls[0].end(request_id)
        assert await generation_.read() is EOF
    clock[0] = 130.0
    await start(streams, "r3")
    assert len(stub.calls) == 2 and stub.calls[1].written == ["start r3"]
    await settled()
    assert stub.calls[0].written == ["start r1", "start r2", "half-close"]  # idle: closed now
    await streams.aclose()


async def test_a_cancel_on_a_retired_stream_goes_out_before_its_half_close() -> None:
    stub, clock = ServedStub(), [0.0]
    streams = streams_of(stub, StreamLimits(max_age_s=0, max_generations=1), clock)
    generation_ = await start(streams, "r1")
    generation_.cancel()
    await settled()
    assert stub.calls[0].written == ["start r1", "cancel r1", "half-close"]


async def test_shutdown_closes_retiring_streams_too() -> None:
    stub, clock = ServedStub(), [0.0]
    streams = streams_of(stub, StreamLimits(max_age_s=0, max_generations=1), clock)
    running = await start(streams, "r1")  # retired at once, r1 still running
    await streams.aclose()
    assert stub.calls[0].cancelled
    with pytest.raises(RequestError):
        await running.read()


def test_stream_limits_of_zero_never_retire() -> None:
    stream = BackendStream.__new__(BackendStream)
    stream.opened_at, stream.started = 0.0, 10**9
    assert not StreamLimits(max_age_s=0, max_generations=0).spent(stream, now=10**9)
    assert StreamLimits(max_age_s=1, max_generations=0).spent(stream, now=1.0)
    assert StreamLimits(max_age_s=0, max_generations=10**9).spent(stream, now=0.0)


async def test_quiet_for_counts_from_the_latest_message_on_any_of_the_backends_streams() -> None:
    stub = ServedStub()
    streams = streams_of(stub, StreamLimits(), [0.0], max_streams=2)
    loop = asyncio.get_running_loop()
    assert streams.quiet_for(loop.time()) == float("inf") and streams.running == 0
    first, _ = await start(streams, "r1"), await start(streams, "r2")  # two streams
    assert streams.running == 2 and streams.quiet_for(loop.time()) == float("inf")
    stub.calls[1].end("r2")  # a message on the second stream only
    await settled()
    assert streams.running == 1
    quiet = streams.quiet_for(loop.time())
    assert quiet != float("inf") and quiet >= 0  # counted from that message
    assert not first.done()
    await streams.aclose()
