"""OutputChannel: merged hand-over, pacing that never holds the first output or a finish."""

from __future__ import annotations

import asyncio

import pytest

from inference.engines.base import EngineFinish, SequenceOutput, TokenLogprob
from inference.engines.channel import OutputChannel
from inference.engines.synthetic import SyntheticEngine
from tests.support.virtual_time import virtual_time
from tests.unit.engines.test_synthetic import Collected, make_request


def out(index: int, *ids: int, finish: EngineFinish | None = None) -> SequenceOutput:
    return SequenceOutput(index=index, token_ids=list(ids), finish=finish)


async def test_unread_outputs_merge_into_one_per_choice_in_index_order() -> None:
    channel = OutputChannel(2)
    channel.put([out(1, 10), out(0, 20)])
    channel.put([out(0, 21), out(1, 11, finish=EngineFinish.LENGTH)])
    taken = await channel.take()
    assert [(o.index, o.token_ids, o.finish) for o in taken] == [
        (0, [20, 21], None),
        (1, [10, 11], EngineFinish.LENGTH),
    ]
    assert not channel.drained  # choice 0 has not finished
    channel.put([out(0, finish=EngineFinish.EOS)])
    assert not channel.drained  # its finish is not handed over yet
    await channel.take()
    assert channel.drained


async def test_merging_keeps_logprobs_and_ignores_output_after_a_finish() -> None:
    channel = OutputChannel(2)
    first = TokenLogprob(token_id=5, logprob=-0.5)
    second = TokenLogprob(token_id=6, logprob=-1.5)
    channel.put([SequenceOutput(index=0, token_ids=[5], logprobs=[first])])
    channel.put(
        [
            SequenceOutput(
                index=0,
                token_ids=[6],
                logprobs=[second],
                finish=EngineFinish.STOP_TOKEN,
                stop_token_id=6,
            )
        ]
    )
    channel.put([out(0, 7)])  # a late output of a finished choice is dropped
    (merged,) = await channel.take()
    assert merged.token_ids == [5, 6]
    assert merged.logprobs == [first, second]
    assert (merged.finish, merged.stop_token_id) == (EngineFinish.STOP_TOKEN, 6)


async def test_take_waits_for_output() -> None:
    channel = OutputChannel(2)
    reader = asyncio.create_task(channel.take())
    await asyncio.sleep(0.01)
    assert not reader.done()
    channel.put([out(0, 1)])
    assert [o.token_ids for o in await asyncio.wait_for(reader, 1.0)] == [[1]]


@virtual_time
async def test_paced_take_holds_tokens_but_never_the_first_output() -> None:
    loop = asyncio.get_running_loop()
    channel = OutputChannel(2)
    channel.put([out(0, 1)])
    started = loop.time()
    assert [o.token_ids for o in await channel.take(0.2)] == [[1]]
    assert loop.time() == started, "the first output was held"

    reader = asyncio.create_task(channel.take(0.2))
    for token in (2, 3, 4):
        await asyncio.sleep(0.02)
        channel.put([out(0, token)])
    assert not reader.done(), "a paced reader was handed tokens before its interval"
    taken = await asyncio.wait_for(reader, 1.0)
    assert [o.token_ids for o in taken] == [[2, 3, 4]]
    assert loop.time() == pytest.approx(started + 0.2), "held until 0.2 s after the first take"


@virtual_time
async def test_a_finish_is_handed_over_at_once_even_when_paced() -> None:
    loop = asyncio.get_running_loop()
    channel = OutputChannel(2)
    channel.put([out(0, 1)])
    await channel.take(10.0)
    reader = asyncio.create_task(channel.take(10.0))
    channel.put([out(0, 2)])
    await asyncio.sleep(0.01)
    started = loop.time()
    channel.put([out(0, 3, finish=EngineFinish.EOS)])
    taken = await asyncio.wait_for(reader, 1.0)
    assert loop.time() == started
    assert [(o.token_ids, o.finish) for o in taken] == [([2, 3], EngineFinish.EOS)]


async def test_fail_raises_in_the_reader_even_with_unread_output() -> None:
    channel = OutputChannel(2)
    reader = asyncio.create_task(channel.take(10.0))
    await asyncio.sleep(0)
    channel.put([out(0, 1)])
    channel.fail(RuntimeError("step failed"))
    with pytest.raises(RuntimeError, match="step failed"):
        await asyncio.wait_for(reader, 1.0)


@virtual_time
async def test_a_paced_synthetic_stream_ends_when_it_finishes_not_at_the_next_interval() -> None:
    # 30 tokens at 1000/s: the last is due at 29 ms; a 1 s pace must not hold the end.
    loop = asyncio.get_running_loop()
    engine = SyntheticEngine(
        vocab_ids=range(1000, 1010), tokens_per_second=1000.0, tick_ms=2.0, clock=loop.time
    )
    await engine.start()
    request = make_request(max_tokens=30)
    request.pace = lambda: 1.0
    started = loop.time()
    collected = Collected()
    async for batch in engine.generate(request):
        collected.add(batch)
    elapsed = loop.time() - started
    await engine.shutdown()
    assert len(collected.tokens[0]) == 30
    assert collected.finish == {0: EngineFinish.LENGTH}
    assert len(collected.batches) == 2  # the first token at once, the rest with the finish
    # The tick that emits the last token (the first at or after 29 ms) hands the finish over.
    assert 0.029 <= elapsed < 0.031, f"the finish waited for the pacing interval ({elapsed} s)"


async def test_iterating_paces_by_the_requests_pace_and_never_holds_a_finish() -> None:
    # The engines only put outputs; the channel they yield from applies the pacing.
    paces: list[int] = []

    def pace() -> float:
        paces.append(1)
        return 100.0

    channel = OutputChannel(1, pace)
    takes = aiter(channel)
    channel.put([out(0, 1)])
    assert [o.token_ids for o in await asyncio.wait_for(anext(takes), 1)] == [[1]]
    reader = asyncio.ensure_future(anext(takes))
    channel.put([out(0, 2)])
    for _ in range(5):
        await asyncio.sleep(0)
    assert not reader.done(), "a token was handed over before the pacing interval"
    channel.put([out(0, 3, finish=EngineFinish.EOS)])
    taken = await asyncio.wait_for(reader, 1)
    assert [(o.token_ids, o.finish) for o in taken] == [([2, 3], EngineFinish.EOS)]
    with pytest.raises(StopAsyncIteration):
        await anext(takes)
    assert len(paces) == 2  # asked before each take
