"""SyntheticEngine keeps the Engine contract, its token rate, and stays cheap at 256 streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import pytest

from inference.engines.base import (
    EngineFinish,
    EngineRequest,
    EngineRequestError,
    EngineStats,
    EngineUnavailableError,
    SequenceOutput,
)
from inference.engines.synthetic import SyntheticEngine
from tests.support.engine_requests import engine_request
from tests.support.virtual_time import VirtualTimeLoop, virtual_time

VOCAB = list(range(1000, 1010))


def make_request(
    request_id: str = "r1",
    *,
    eos: frozenset[int] = frozenset(),
    deadline: float | None = None,
    **params: object,
) -> EngineRequest:
    return engine_request([1, 2, 3], request_id=request_id, eos=eos, deadline=deadline, **params)


class Collected:
    """Everything one `generate` call yielded, per choice."""

    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = defaultdict(list)
        self.finish: dict[int, EngineFinish] = {}
        self.stop_token: dict[int, int | None] = {}
        self.batches: list[list[SequenceOutput]] = []

    def add(self, batch: list[SequenceOutput]) -> None:
        self.batches.append(batch)
        for out in batch:
            assert out.index not in self.finish, "output after the choice finished"
            self.tokens[out.index].extend(out.token_ids)
            if out.logprobs is not None:
                assert len(out.logprobs) == len(out.token_ids)
            if out.finish is not None:
                self.finish[out.index] = out.finish
                self.stop_token[out.index] = out.stop_token_id


async def collect(engine: SyntheticEngine, request: EngineRequest) -> Collected:
    got = Collected()
    async for batch in engine.generate(request):
        got.add(batch)
    return got


def fast_engine(**kwargs: object) -> SyntheticEngine:
    kwargs.setdefault("vocab_ids", VOCAB)
    kwargs.setdefault("tokens_per_second", 2000.0)
    kwargs.setdefault("tick_ms", 1.0)
    return SyntheticEngine(**kwargs)  # type: ignore[arg-type]


async def test_emits_max_tokens_cycling_over_vocab_and_finishes_once_per_choice() -> None:
    engine = fast_engine()
    got = await collect(engine, make_request(max_tokens=25, n=3))
    assert set(got.finish) == {0, 1, 2}
    assert all(reason is EngineFinish.LENGTH for reason in got.finish.values())
    for index in range(3):
        ids = got.tokens[index]
        assert len(ids) == 25
        # Cycles over the vocabulary in order, from a per-choice offset.
        start = VOCAB.index(ids[0])
        assert ids == [VOCAB[(start + k) % len(VOCAB)] for k in range(25)]
    assert len({got.tokens[i][0] for i in range(3)}) == 3, "choices should differ"
    assert engine.stats().active_requests == 0
    assert engine.stats().generated_tokens == 75


async def test_output_is_deterministic() -> None:
    first = await collect(fast_engine(), make_request(max_tokens=12, n=2))
    second = await collect(fast_engine(), make_request(max_tokens=12, n=2))
    assert first.tokens == second.tokens


@virtual_time
async def test_tokens_arrive_at_the_configured_rate() -> None:
    loop = asyncio.get_running_loop()
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=200.0, tick_ms=2.0, clock=loop.time)
    arrivals: list[float] = []
    got = Collected()
    async for batch in engine.generate(make_request(max_tokens=41)):
        arrivals.append(loop.time())
        got.add(batch)
    # Ticks of 2 ms against a 5 ms token interval: one token per output, not bursts; the
    # finish comes with the last token.
    assert [[len(o.token_ids) for o in batch] for batch in got.batches] == [[1]] * 41
    assert got.finish == {0: EngineFinish.LENGTH}
    # Token k is due at k / rate (the first at once) and goes out at the first tick from then.
    for k, at in enumerate(arrivals):
        assert k / 200.0 - 1e-9 <= at < k / 200.0 + 0.002, (k, at)


class FrozenClock:
    """The engine's clock: `monotonic()` returns what the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.mark.timeout(10)  # the old engine hung inside one synchronous step
async def test_a_token_due_within_rounding_of_now_is_emitted_not_requeued_forever() -> None:
    # Token k is due at start + k / rate. With this start, (now - start) * 100 at
    # now = start + 0.76 floors to 75, one short of the 76 the heap key says are due; the
    # engine used to emit nothing, push the choice back at the same key and spin forever
    # (found at 100 tokens/s, where it hung a benchmark within a minute).
    start = 17361.003764039735
    assert int((start + 0.76 - start) * 100) + 1 <= 76  # the rounding this test needs
    clock = FrozenClock(start)
    engine = SyntheticEngine(
        vocab_ids=VOCAB, tokens_per_second=100.0, tick_ms=1.0, clock=clock.monotonic
    )
    stream = engine.generate(make_request(max_tokens=200))
    first = await asyncio.wait_for(anext(stream), 5)
    assert [len(o.token_ids) for o in first] == [1]
    clock.now = start + 0.76
    batch = await asyncio.wait_for(anext(stream), 5)
    # Tokens 1..76 are due by start + 0.76.
    assert sum(len(o.token_ids) for o in batch) == 76
    await stream.aclose()  # type: ignore[attr-defined]


async def test_output_tokens_is_the_natural_length_unless_ignore_eos() -> None:
    engine = fast_engine(output_tokens=5)
    short = await collect(engine, make_request(max_tokens=20))
    assert len(short.tokens[0]) == 5
    assert short.finish[0] is EngineFinish.EOS

    forced = await collect(engine, make_request(max_tokens=20, ignore_eos=True))
    assert len(forced.tokens[0]) == 20
    assert forced.finish[0] is EngineFinish.LENGTH

    capped = await collect(engine, make_request(max_tokens=3))
    assert len(capped.tokens[0]) == 3
    assert capped.finish[0] is EngineFinish.LENGTH

    floor = await collect(engine, make_request(max_tokens=20, min_tokens=9))
    assert len(floor.tokens[0]) == 9
    assert floor.finish[0] is EngineFinish.EOS


async def test_eos_ids_end_the_choice_unless_ignored_or_before_min_tokens() -> None:
    engine = fast_engine(vocab_ids=[10, 11, 12, 2])
    eos = frozenset({2})
    stopped = await collect(engine, make_request(max_tokens=20, eos=eos))
    assert stopped.tokens[0] == [10, 11, 12]  # the EOS token itself is not output
    assert stopped.finish[0] is EngineFinish.EOS

    late = await collect(engine, make_request(max_tokens=20, eos=eos, min_tokens=5))
    assert late.tokens[0] == [10, 11, 12, 2, 10, 11, 12]
    assert late.finish[0] is EngineFinish.EOS

    ignored = await collect(engine, make_request(max_tokens=9, eos=eos, ignore_eos=True))
    assert len(ignored.tokens[0]) == 9
    assert ignored.finish[0] is EngineFinish.LENGTH


async def test_stop_token_ids_end_the_choice_and_say_which() -> None:
    engine = fast_engine(vocab_ids=[10, 11, 12, 13])
    got = await collect(
        engine, make_request(max_tokens=20, stop_token_ids=frozenset({12}), ignore_eos=True)
    )
    assert got.tokens[0] == [10, 11, 12]
    assert got.finish[0] is EngineFinish.STOP_TOKEN
    assert got.stop_token[0] == 12


async def test_finish_choice_cancels_only_that_choice() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=500.0, tick_ms=1.0)
    got = Collected()
    async for batch in engine.generate(make_request(max_tokens=40, n=2)):
        got.add(batch)
        if len(got.tokens[1]) >= 3 and 1 not in got.finish:
            engine.finish_choice("r1", 1)
    assert got.finish == {0: EngineFinish.LENGTH, 1: EngineFinish.CANCELLED}
    assert len(got.tokens[0]) == 40
    assert 3 <= len(got.tokens[1]) < 40
    # Unknown ids and indexes are a race with finishing, not an error.
    engine.finish_choice("gone", 0)
    engine.finish_choice("r1", 7)


async def test_closing_the_iterator_leaves_the_batch_at_once() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=100.0, tick_ms=1.0)
    stream = engine.generate(make_request(max_tokens=1000))
    assert engine.stats().active_requests == 1
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        await anext(stream)
    assert engine.stats().active_requests == 0
    emitted = engine.stats().generated_tokens
    await asyncio.sleep(0.05)
    assert engine.stats().generated_tokens == emitted, "a closed request kept emitting"


async def test_cancelling_the_reader_task_leaves_the_batch() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=100.0, tick_ms=1.0)

    async def read() -> None:
        async for _ in engine.generate(make_request(max_tokens=1000)):
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.03)
    assert engine.stats().active_requests == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().active_requests == 0


@virtual_time
async def test_deadline_ends_unfinished_choices_with_time_limit() -> None:
    loop = asyncio.get_running_loop()
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=200.0, tick_ms=1.0, clock=loop.time)
    deadline = loop.time() + 0.05
    got = await collect(engine, make_request(max_tokens=1000, n=2, deadline=deadline))
    assert got.finish == {0: EngineFinish.TIME_LIMIT, 1: EngineFinish.TIME_LIMIT}
    # Tokens 0..9 are due before the deadline (k / 200 < 0.05); the tick that reaches it
    # ends the choices before it emits token 10.
    assert len(got.tokens[0]) == len(got.tokens[1]) == 10
    assert deadline <= loop.time() < deadline + 0.001


async def test_a_lagging_reader_gets_coalesced_outputs_and_loses_nothing() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=1000.0, tick_ms=1.0)
    got = Collected()
    async for batch in engine.generate(make_request(max_tokens=60)):
        got.add(batch)
        await asyncio.sleep(0.02)  # a slow reader: 20 tokens come due per read
    assert len(got.tokens[0]) == 60
    assert len(got.batches) < 15
    assert max(len(o.token_ids) for b in got.batches for o in b) >= 10


async def test_logprobs_are_ordered_and_sized() -> None:
    engine = fast_engine()
    seen = []
    async for batch in engine.generate(make_request(max_tokens=6, logprobs=True, top_logprobs=3)):
        for out in batch:
            assert out.logprobs is not None
            for token, lp in zip(out.token_ids, out.logprobs, strict=True):
                assert lp.token_id == token
                assert len(lp.top) == 3
                values = [lp.logprob] + [v for _, v in lp.top]
                assert values == sorted(values, reverse=True)
                assert values[0] < 0
                seen.append(token)
    assert len(seen) == 6


async def test_duplicate_running_request_id_is_refused() -> None:
    engine = fast_engine()
    stream = engine.generate(make_request(max_tokens=100))
    with pytest.raises(EngineRequestError):
        engine.generate(make_request(max_tokens=1))
    await stream.aclose()  # type: ignore[attr-defined]


async def test_shutdown_cancels_running_requests_and_refuses_new_ones() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=100.0, tick_ms=1.0)
    await engine.start()
    got = Collected()

    async def read() -> None:
        async for batch in engine.generate(make_request(max_tokens=1000)):
            got.add(batch)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.03)
    await engine.shutdown()
    await asyncio.wait_for(task, 1.0)
    assert got.finish[0] is EngineFinish.CANCELLED
    with pytest.raises(EngineUnavailableError):
        engine.generate(make_request("r2"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vocab_ids": []},
        {"vocab_ids": [-1]},
        {"vocab_ids": VOCAB, "tokens_per_second": 0},
        {"vocab_ids": VOCAB, "output_tokens": 0},
        {"vocab_ids": VOCAB, "tick_ms": 0},
        {"vocab_ids": VOCAB, "max_batch_size": 0},
    ],
)
def test_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SyntheticEngine(**kwargs)  # type: ignore[arg-type]


@virtual_time
async def test_256_streams_at_120_tokens_per_second_wake_the_engine_once_per_tick() -> None:
    """The issue's load, ~30,000 tokens/s: the engine's cost is one timer wake-up per tick
    (5 ms), not one per token or per stream; every token arrives, on time."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    engine = SyntheticEngine(vocab_ids=VOCAB, tokens_per_second=120.0, tick_ms=5.0, clock=loop.time)
    streams, tokens = 256, 120  # one second of tokens per stream
    received = 0

    async def read(i: int) -> None:
        nonlocal received
        async for batch in engine.generate(make_request(f"s{i}", max_tokens=tokens)):
            received += sum(len(o.token_ids) for o in batch)

    timers_before = loop.timers_scheduled
    await asyncio.gather(*(read(i) for i in range(streams)))
    assert received == streams * tokens
    # The last token is due at 119 / 120 s; the tick at 1 s (or just before) emits it.
    assert loop.time() <= 1.0 + 0.005
    ticks = loop.timers_scheduled - timers_before
    assert ticks <= 1.0 / 0.005 + 2, f"{ticks} timer wake-ups for {received} tokens"


# A full batch: max_batch_size -------------------------------------------------------------


def batched_engine(max_batch_size: int) -> SyntheticEngine:
    """100 tokens/s per choice, `max_batch_size` choices at once, on the (virtual) loop's clock."""
    return SyntheticEngine(
        vocab_ids=VOCAB,
        tokens_per_second=100.0,
        tick_ms=1.0,
        max_batch_size=max_batch_size,
        clock=asyncio.get_running_loop().time,
    )


@virtual_time
async def test_a_request_beyond_the_batch_waits_its_turn_and_then_runs_whole() -> None:
    engine = batched_engine(2)
    first = asyncio.create_task(collect(engine, make_request("first", max_tokens=20, n=2)))
    await asyncio.sleep(0)
    second = engine.generate(make_request("second", max_tokens=5))
    assert engine.stats().active_requests == 1 and engine.stats().queued_requests == 1
    got = Collected()
    async for batch in second:
        if not got.batches:  # its first output: the first request had to end before it
            assert first.done()
            assert engine.stats().queued_requests == 0
        got.add(batch)
    assert len((await first).tokens[1]) == 20
    assert got.tokens[0] and len(got.tokens[0]) == 5 and got.finish[0] is EngineFinish.LENGTH


@virtual_time
async def test_requests_wait_in_arrival_order_and_a_small_one_does_not_jump_the_line() -> None:
    engine = batched_engine(2)
    order: list[str] = []

    async def run(request_id: str, n: int) -> None:
        async for batch in engine.generate(make_request(request_id, max_tokens=3, n=n)):
            if batch and request_id not in order:
                order.append(request_id)

    # "big" needs the whole batch; "small" (n=1) would fit beside "running" but comes after.
    tasks = [asyncio.create_task(run("running", 1))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(run("big", 2)), asyncio.create_task(run("small", 1))]
    await asyncio.gather(*tasks)
    assert order == ["running", "big", "small"]


@virtual_time
async def test_a_waiting_request_closed_or_past_its_deadline_leaves_the_line() -> None:
    engine = batched_engine(1)
    running = engine.generate(make_request("running", max_tokens=1000))
    await anext(running)  # type: ignore[call-overload]  # started: closing it now ends it
    closed = asyncio.create_task(collect(engine, make_request("closed", max_tokens=5)))
    timed = make_request("timed", max_tokens=5, deadline=asyncio.get_running_loop().time() + 0.05)
    expired = asyncio.create_task(collect(engine, timed))
    await asyncio.sleep(0)  # the tasks register theirs
    assert engine.stats().queued_requests == 2
    closed.cancel()  # its reader goes away while it waits
    with pytest.raises(asyncio.CancelledError):
        await closed
    assert engine.stats().queued_requests == 1
    got = await expired  # it never ran: every choice ends with the time limit, no token
    assert got.finish == {0: EngineFinish.TIME_LIMIT} and not got.tokens[0]
    assert engine.stats().queued_requests == 0
    await running.aclose()  # type: ignore[attr-defined]
    assert engine.stats().active_requests == 0
    # The room is free again: a new request runs at once.
    assert len((await collect(engine, make_request("next", max_tokens=3))).tokens[0]) == 3


def test_n_beyond_the_batch_is_refused() -> None:
    engine = SyntheticEngine(vocab_ids=VOCAB, max_batch_size=2)
    with pytest.raises(EngineRequestError):
        engine.generate(make_request(n=3))


@virtual_time
async def test_a_finished_request_frees_its_room_before_its_reader_drains_it() -> None:
    engine = batched_engine(1)
    unread = engine.generate(make_request("unread", max_tokens=2))  # nobody reads it
    async with asyncio.timeout(10.0):  # virtual seconds: the room never came back
        got = await collect(engine, make_request("next", max_tokens=3))
    assert len(got.tokens[0]) == 3
    assert engine.stats() == EngineStats(generated_tokens=5)
    await unread.aclose()  # type: ignore[attr-defined]


@virtual_time
async def test_stats_count_a_request_that_timed_out_waiting_as_gone_before_it_is_read() -> None:
    engine = batched_engine(1)
    running = engine.generate(make_request("running", max_tokens=1000))
    deadline = asyncio.get_running_loop().time() + 0.05
    waiting = [
        engine.generate(make_request(f"w{i}", max_tokens=5, deadline=deadline)) for i in range(2)
    ]
    assert (engine.stats().active_requests, engine.stats().queued_requests) == (1, 2)
    await asyncio.sleep(0.1)  # both deadlines pass; their readers have not looked yet
    assert (engine.stats().active_requests, engine.stats().queued_requests) == (1, 0)
    for stream in (running, *waiting):
        await stream.aclose()  # type: ignore[attr-defined]


async def test_shutdown_ends_waiting_requests_without_running_them() -> None:
    engine = SyntheticEngine(
        vocab_ids=VOCAB, tokens_per_second=100.0, tick_ms=1.0, max_batch_size=1
    )
    running = engine.generate(make_request("running", max_tokens=1000))
    queued = make_request("queued", max_tokens=5)
    waiting = asyncio.create_task(collect(engine, queued))
    await asyncio.sleep(0)
    await engine.shutdown()  # the running one's room is not handed to the waiting one
    got = await waiting
    assert got.finish == {0: EngineFinish.CANCELLED} and not got.tokens[0]
    assert queued.timings.scheduled is None  # it never ran
    await running.aclose()  # type: ignore[attr-defined]
