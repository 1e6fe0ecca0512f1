"""A Generation on a GenerateMany stream reads like the Generate call it replaces.

The stream here only records cancels; the facade's integration tests run the real streams
against the real service (cancellation, failover, errors).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from facade.backend_streams import EOF, BackendStream, Generation
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
    stream = BackendStream(FakeStub(call))  # type: ignore[arg-type]
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
