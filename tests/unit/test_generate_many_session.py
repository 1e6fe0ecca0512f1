"""GenerateManySession (GenerateMany's server side): batching, ends, cancellation, and closing.

The generations and the write are stand-ins driven by the test, so the timing of every
flush is the test's to choose; tests/integration/test_generate_many.py runs the real RPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import grpc
import pytest

from inference.errors import invalid
from inference.generate_many import EngineProgress, GenerateManySession
from tensorchat.v1 import inference_pb2 as pb

FLUSH_S = 0.05  # long enough that a held delta is told apart from an immediate flush


def delta(text: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(delta=pb.Delta(text=text))


class Script:
    """Generations whose responses the test feeds; records which were closed and how."""

    def __init__(self) -> None:
        self.feeds: dict[str, asyncio.Queue[pb.GenerateResponse | Exception | None]] = {}
        self.closed: set[str] = set()

    def feed(self, request_id: str, item: pb.GenerateResponse | Exception | None) -> None:
        self.feeds.setdefault(request_id, asyncio.Queue()).put_nowait(item)

    async def generations(
        self, request: pb.GenerateRequest
    ) -> AsyncGenerator[pb.GenerateResponse, None]:
        queue = self.feeds.setdefault(request.request_id, asyncio.Queue())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed.add(request.request_id)


class Writes:
    """The call's writes, each with the loop time it was made."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[pb.GenerationEvent]]] = []
        self.reads_batches: list[bool] = []  # each write's flag
        self.changed = asyncio.Event()

    async def write(self, message: pb.GenerateManyResponse) -> None:
        self.batches.append((asyncio.get_running_loop().time(), list(message.events)))
        self.reads_batches.append(message.reads_batches)
        self.changed.set()

    async def until(self, count: int, within_s: float = 2.0) -> None:
        async with asyncio.timeout(within_s):
            while sum(len(events) for _, events in self.batches) < count:
                self.changed.clear()
                await self.changed.wait()

    def events(self, request_id: str) -> list[pb.GenerationEvent]:
        return [e for _, events in self.batches for e in events if e.request_id == request_id]


class Client:
    """The request side of the call: messages the test sends, then a half-close."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[pb.GenerateManyRequest | None] = asyncio.Queue()

    def start(self, request_id: str) -> None:
        request = pb.GenerateRequest(request_id=request_id, model="m")
        self._queue.put_nowait(pb.GenerateManyRequest(start=request))

    def cancel(self, request_id: str) -> None:
        self._queue.put_nowait(pb.GenerateManyRequest(cancel=request_id))

    def send(self, message: pb.GenerateManyRequest) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def messages(self) -> AsyncIterator[pb.GenerateManyRequest]:
        while (message := await self._queue.get()) is not None:
            yield message


@pytest.fixture()
def parts() -> tuple[Script, Writes, Client]:
    return Script(), Writes(), Client()


def serve(parts: tuple[Script, Writes, Client]) -> asyncio.Task[None]:
    script, writes, client = parts
    session = GenerateManySession(script.generations, writes.write, FLUSH_S)
    return asyncio.create_task(session.run(client.messages()))


async def serve_a_and_b(parts: tuple[Script, Writes, Client]) -> asyncio.Task[None]:
    """A served call with generations "a" and "b" running, a's first response written."""
    script, writes, client = parts
    task = serve(parts)
    client.start("a")
    client.start("b")
    script.feed("a", delta("a0"))
    await writes.until(1)
    return task


async def test_first_tokens_and_ends_go_at_once_and_later_deltas_share_a_write(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    task = serve(parts)
    for request_id in ("a", "b"):
        client.start(request_id)
        script.feed(request_id, delta(f"{request_id}0"))
    await writes.until(2)
    first_writes = len(writes.batches)
    t0 = asyncio.get_running_loop().time()
    # Later deltas of both generations are held until the interval passes, then go together.
    for request_id in ("a", "b"):
        script.feed(request_id, delta(f"{request_id}1"))
    await writes.until(4)
    held_at, held = writes.batches[-1]
    assert [e.response.delta.text for e in held] == ["a1", "b1"]
    assert len(writes.batches) == first_writes + 1
    assert held_at - t0 >= FLUSH_S * 0.5
    # An end is not held, however recent the previous write.
    script.feed("a", None)
    await writes.until(5, within_s=FLUSH_S * 0.8)
    assert writes.events("a")[-1].end == pb.GenerationEnd(code=0)
    script.feed("b", None)
    client.close()
    await asyncio.wait_for(task, 2)
    assert [e.response.delta.text for e in writes.events("b")[:-1]] == ["b0", "b1"]
    assert writes.events("b")[-1].end.code == 0


async def test_a_refused_generation_ends_with_its_status_and_the_others_go_on(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    task = serve(parts)
    client.start("ok")
    client.start("bad")
    script.feed("bad", invalid("temperature", "must be at most 2", code="bad_value"))
    script.feed("ok", delta("x"))
    script.feed("ok", None)
    client.close()
    await asyncio.wait_for(task, 2)
    (end,) = writes.events("bad")
    assert end.end == pb.GenerationEnd(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="temperature: must be at most 2",
        param="temperature",
        error_code="bad_value",
    )
    assert [e.WhichOneof("kind") for e in writes.events("ok")] == ["response", "end"]


async def test_cancel_ends_that_generation_with_cancelled_and_closes_it(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    task = await serve_a_and_b(parts)
    client.cancel("a")
    await writes.until(2)
    assert writes.events("a")[-1].end.code == grpc.StatusCode.CANCELLED.value[0]
    assert script.closed == {"a"}
    client.cancel("unknown")  # a generation that already ended: nothing happens
    script.feed("b", None)
    client.close()
    await asyncio.wait_for(task, 2)
    assert writes.events("b")[-1].end.code == 0


@pytest.mark.parametrize("request_id", ["", "a"])
async def test_a_missing_or_running_request_id_is_refused_without_touching_the_running_one(
    parts: tuple[Script, Writes, Client], request_id: str
) -> None:
    script, writes, client = parts
    task = serve(parts)
    client.start("a")
    script.feed("a", delta("a0"))
    await writes.until(1)
    client.start(request_id)
    await writes.until(2)
    # A `refused` event: an `end` under a running id would read as that generation's end.
    refusal_event = writes.events(request_id)[-1]
    assert refusal_event.WhichOneof("kind") == "refused"
    assert refusal_event.refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refusal_event.refused.param == "request_id"
    script.feed("a", delta("a1"))
    script.feed("a", None)
    client.close()
    await asyncio.wait_for(task, 2)
    texts = [e.response.delta.text for e in writes.events("a") if e.HasField("response")]
    assert texts == ["a0", "a1"]
    # The running generation gets exactly one end: its own.
    assert [e.end.code for e in writes.events("a") if e.HasField("end")] == [0]


async def test_half_close_waits_for_running_generations_then_ends(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    task = serve(parts)
    client.start("a")
    client.close()
    await asyncio.sleep(FLUSH_S)
    assert not task.done()
    script.feed("a", delta("late"))
    script.feed("a", None)
    await asyncio.wait_for(task, 2)
    assert [e.WhichOneof("kind") for e in writes.events("a")] == ["response", "end"]


async def test_ending_the_call_stops_every_generation(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, _ = parts
    task = await serve_a_and_b(parts)
    task.cancel()  # what grpc does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script.closed == {"a", "b"}
    # No end is written for a call that is gone.
    assert all(not e.HasField("end") for _, events in writes.batches for e in events)


async def test_an_unexpected_error_still_ends_the_generation_with_internal(
    parts: tuple[Script, Writes, Client],
) -> None:
    # The servicer's `_generate` turns every failure into a RequestError; anything else
    # escaping is a bug, but the reader must still get an end instead of waiting for ever.
    script, writes, client = parts
    task = serve(parts)
    client.start("a")
    script.feed("a", RuntimeError("a bug"))
    await writes.until(1)
    (end,) = writes.events("a")
    assert end.end.code == grpc.StatusCode.INTERNAL.value[0]
    assert "request id a" in end.end.message
    client.close()
    await asyncio.wait_for(task, 2)


async def test_a_cancel_before_the_generation_ran_still_ends_it_once(
    parts: tuple[Script, Writes, Client],
) -> None:
    # The start and the cancel are read without a pause between them, so the generation is
    # cancelled before its first step: it must still end (CANCELLED) and leave the session.
    _, writes, client = parts
    client.start("a")
    client.cancel("a")
    client.close()
    task = serve(parts)
    await asyncio.wait_for(task, 2)
    assert [e.end.code for e in writes.events("a")] == [grpc.StatusCode.CANCELLED.value[0]]


async def test_draining_ends_the_call_once_its_generations_have_ended(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    session = GenerateManySession(script.generations, writes.write, FLUSH_S)
    task = asyncio.create_task(session.run(client.messages()))
    client.start("a")
    script.feed("a", delta("a0"))
    await writes.until(1)
    session.close()  # the client never half-closes: the server is stopping (drains)
    await asyncio.sleep(FLUSH_S)
    assert not task.done()  # a generation still runs
    script.feed("a", None)
    await asyncio.wait_for(task, 2)
    assert writes.events("a")[-1].end.code == 0


async def test_a_draining_idle_call_ends_at_once(parts: tuple[Script, Writes, Client]) -> None:
    script, writes, client = parts
    session = GenerateManySession(script.generations, writes.write, FLUSH_S)
    task = asyncio.create_task(session.run(client.messages()))
    await asyncio.sleep(0)
    session.close()
    await asyncio.wait_for(task, 2)
    assert writes.batches == []


async def test_a_batch_starts_in_order_then_cancels_and_the_first_write_says_so(
    parts: tuple[Script, Writes, Client],
) -> None:
    script, writes, client = parts
    task = serve(parts)
    starts = [pb.GenerateRequest(request_id=r, model="m") for r in ("a", "b", "c")]
    # The single action first, then the starts, then the cancels: "c" starts, then stops.
    client.send(pb.GenerateManyRequest(cancel="a", starts=starts, cancels=["c"]))
    for request_id in ("a", "b"):
        script.feed(request_id, delta(f"{request_id}0"))
        script.feed(request_id, None)
    client.close()
    await asyncio.wait_for(task, 2)
    # The cancel of "a" came before its start: nothing to cancel, so "a" runs to its end.
    for request_id in ("a", "b"):
        assert [e.WhichOneof("kind") for e in writes.events(request_id)] == ["response", "end"]
        assert writes.events(request_id)[-1].end.code == 0
    assert [e.end.code for e in writes.events("c")] == [grpc.StatusCode.CANCELLED.value[0]]
    assert script.closed == {"a", "b"}  # "c" was cancelled before its first step
    assert writes.reads_batches[0] and not any(writes.reads_batches[1:])


class GatedWrites(Writes):
    """Writes that wait, each, until the test opens the gate (a client that reads slowly)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def write(self, message: pb.GenerateManyResponse) -> None:
        await self.gate.wait()
        await super().write(message)


async def read_late(
    responses: list[pb.GenerateResponse], while_unread: Callable[[Script], None]
) -> GatedWrites:
    """Generation "a" gets `responses` while the client reads nothing (the first write
    waits); `while_unread` looks then; the client reads the rest, and the call ends."""
    script, writes, client = Script(), GatedWrites(), Client()
    session = GenerateManySession(script.generations, writes.write, 0.0)
    task = asyncio.create_task(session.run(client.messages()))
    client.start("a")
    for response in responses:
        script.feed("a", response)
    for _ in range(50):  # let the pump take all it may
        await asyncio.sleep(0)
    while_unread(script)
    writes.gate.set()
    script.feed("a", None)
    client.close()
    await asyncio.wait_for(task, 2)
    assert writes.events("a")[-1].end.code == 0
    return writes


async def test_a_slow_client_holds_generations_back_instead_of_piling_up_their_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # While a write waits on the client, the next write's events are bounded: the generation
    # stops taking responses (its engine channel merges what comes meanwhile), and nothing
    # is lost or reordered once the client reads again.
    monkeypatch.setattr("inference.generate_many.MAX_PENDING_EVENTS", 4)

    def bounded(script: Script) -> None:
        # At most the waiting write's events and the next one's were taken; the rest wait.
        assert 0 < 20 - script.feeds["a"].qsize() <= 4 + 4

    writes = await read_late([delta(f"a{i}") for i in range(20)], bounded)
    texts = [e.response.delta.text for e in writes.events("a")[:-1]]
    assert texts == [f"a{i}" for i in range(20)]
    assert max(len(events) for _, events in writes.batches) <= 4 + 1


async def test_a_write_over_the_size_limit_goes_out_in_parts_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gRPC would refuse one message over its limit and end the call for every generation.
    monkeypatch.setattr("inference.generate_many.MAX_WRITE_BYTES", 100)
    # Taken while the first write waits: the second write holds 11 of them.
    writes = await read_late([delta(f"{i:02d}" + "x" * 30) for i in range(12)], lambda _: None)
    texts = [e.response.delta.text[:2] for e in writes.events("a")[:-1]]
    assert texts == [f"{i:02d}" for i in range(12)]
    sizes = [pb.GenerateManyResponse(events=events).ByteSize() for _, events in writes.batches]
    assert len(writes.batches) > 3 and max(sizes) <= 100
    assert writes.reads_batches[0] and not any(writes.reads_batches[1:])


class Engine:
    """The engine progress a session reads each round: the test moves the counter, and each
    read is a round (a round number is what the tests wait for, never a time)."""

    def __init__(self) -> None:
        self.generated = 0
        self.stuck = False  # a hung engine: its counter stops
        self.rounds = 0
        self.round_done = asyncio.Event()

    def progress(self, model: str) -> int | None:
        self.rounds += 1
        self.round_done.set()
        if model != "m":
            return None  # a name no engine serves
        if not self.stuck:
            self.generated += 1
        return self.generated

    async def until_rounds(self, count: int) -> None:
        async with asyncio.timeout(2.0):
            while self.rounds < count:
                self.round_done.clear()
                await self.round_done.wait()


@pytest.fixture()
def engine() -> Engine:
    return Engine()


def serve_with_engine(
    parts: tuple[Script, Writes, Client], progress: EngineProgress
) -> asyncio.Task[None]:
    """A served call whose `waiting` rounds read `progress`, 10 ms apart."""
    script, writes, client = parts
    session = GenerateManySession(
        script.generations, writes.write, FLUSH_S, progress, waiting_interval_s=0.01
    )
    return asyncio.create_task(session.run(client.messages()))


def kinds(writes: Writes, request_id: str) -> list[str]:
    return [str(event.WhichOneof("kind")) for event in writes.events(request_id)]


async def test_a_generation_that_waits_while_its_engine_works_hears_waiting_until_it_sends(
    parts: tuple[Script, Writes, Client], engine: Engine
) -> None:
    script, writes, client = parts
    task = serve_with_engine(parts, engine.progress)
    client.start("queued")
    # A round for each (the engine moved in each but the first, which has nothing to compare).
    await writes.until(2)
    script.feed("queued", delta("first"))
    await writes.until(3)
    # A generation that has sent gets no more `waiting`. The rounds are counted by the reads
    # of another silent generation's engine (a model no engine serves: it gets none either).
    client.send(pb.GenerateManyRequest(start=pb.GenerateRequest(request_id="x", model="other")))
    await engine.until_rounds(engine.rounds + 3)
    script.feed("x", None)
    script.feed("queued", None)
    client.close()
    await task
    sent = kinds(writes, "queued")
    first = sent.index("response")
    assert first >= 2 and set(sent[:first]) == {"waiting"}
    assert sent[first:] == ["response", "end"]


async def test_a_hung_engine_sends_no_waiting_so_the_watchdog_still_finds_it(
    parts: tuple[Script, Writes, Client], engine: Engine
) -> None:
    script, writes, client = parts
    engine.stuck = True
    task = serve_with_engine(parts, engine.progress)
    client.start("stuck")
    await engine.until_rounds(4)
    assert kinds(writes, "stuck") == []
    engine.stuck = False  # it comes back: the next round that sees it move says so
    await writes.until(1)
    assert set(kinds(writes, "stuck")) == {"waiting"}
    script.feed("stuck", None)
    client.close()
    await task


async def test_a_generation_for_a_model_no_engine_serves_gets_no_waiting(
    parts: tuple[Script, Writes, Client], engine: Engine
) -> None:
    script, writes, client = parts
    task = serve_with_engine(parts, engine.progress)
    client.send(pb.GenerateManyRequest(start=pb.GenerateRequest(request_id="x", model="other")))
    await engine.until_rounds(4)
    assert kinds(writes, "x") == []
    script.feed("x", None)
    client.close()
    await task


async def test_a_round_whose_engine_progress_fails_is_logged_and_the_next_rounds_go_on(
    parts: tuple[Script, Writes, Client], caplog: pytest.LogCaptureFixture, engine: Engine
) -> None:
    script, writes, client = parts
    failures = iter([RuntimeError("stats failed")])

    def progress(model: str) -> int | None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return engine.progress(model)

    task = serve_with_engine(parts, progress)
    client.start("queued")
    await writes.until(1)  # later rounds still report it
    assert set(kinds(writes, "queued")) == {"waiting"}
    assert any("engine progress" in r.getMessage() for r in caplog.records)
    script.feed("queued", None)
    client.close()
    await task
