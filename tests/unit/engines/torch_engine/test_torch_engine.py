"""TorchEngine on a tiny random Llama: the Engine contract, batching, sampling, faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch

from inference.engines.base import (
    EngineFinish,
    EngineRequestError,
    EngineUnavailableError,
)
from inference.engines.torch.engine import TorchEngine, TorchEngineError
from tests.unit.engines.torch_engine.helpers import (
    TINY_EOS,
    Collected,
    collect,
    greedy_without_cache,
    make_request,
    open_stream,
    recorded_forwards,
    wait_for,
)

PROMPTS = [
    [5, 6, 7],
    [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50],
    [200],
    [90, 91, *range(100, 127)],
]


@pytest_asyncio.fixture(scope="module")
async def engine(tiny_llama_dir: Path) -> AsyncIterator[TorchEngine]:
    eng = TorchEngine(tiny_llama_dir, max_batch_size=8)
    await eng.start()
    yield eng
    await eng.shutdown()


@pytest_asyncio.fixture
async def small_engine(tiny_llama_dir: Path) -> AsyncIterator[TorchEngine]:
    """An engine of its own with room for two rows (queueing, faults, shutdown)."""
    eng = TorchEngine(tiny_llama_dir, max_batch_size=2)
    await eng.start()
    yield eng
    await eng.shutdown()


def long_request(request_id: str, **params: Any) -> Any:
    params.setdefault("max_tokens", 400)
    return make_request(request_id, temperature=0.0, ignore_eos=True, **params)


# ---- greedy correctness and batching --------------------------------------------------


async def test_greedy_matches_the_model_run_alone(engine: TorchEngine) -> None:
    got = await collect(engine, make_request("g", PROMPTS[1], temperature=0.0, max_tokens=12))
    assert got.tokens[0] == greedy_without_cache(engine.model, PROMPTS[1], 12)
    assert got.finish() == EngineFinish.LENGTH


async def test_batched_greedy_equals_unbatched_greedy(engine: TorchEngine) -> None:
    lengths = [14, 9, 16, 6]
    alone = [
        (await collect(engine, make_request(f"solo{i}", p, temperature=0.0, max_tokens=n))).tokens[
            0
        ]
        for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))
    ]
    # Now together, joining at different steps (so prompts of other widths pad each row)
    # and leaving at different steps (so the batch is trimmed under the survivors).
    tasks: list[asyncio.Task[Collected]] = []

    def start(i: int) -> None:
        req = make_request(f"batch{i}", PROMPTS[i], temperature=0.0, max_tokens=lengths[i])
        tasks.append(asyncio.ensure_future(collect(engine, req, on_batch=chain(i))))

    def chain(i: int) -> Any:
        def on_batch(k: int) -> None:
            if k == 2 and i + 1 < len(PROMPTS):
                start(i + 1)

        return on_batch

    start(0)
    await wait_for(lambda: len(tasks) == len(PROMPTS))
    together = [t.tokens[0] for t in await asyncio.gather(*tasks)]
    assert together == alone
    assert alone[0] == greedy_without_cache(engine.model, PROMPTS[0], lengths[0])


async def test_concurrent_requests_share_forward_passes(engine: TorchEngine) -> None:
    with recorded_forwards(engine.model) as calls:
        results = await asyncio.gather(
            *(
                collect(engine, make_request(f"c{i}", p, temperature=0.0, max_tokens=12))
                for i, p in enumerate(PROMPTS[:3])
            )
        )
    decode_rows = [rows for rows, width in calls if width == 1]
    # Three streams of 12 tokens: serialised they would need 33 single-row decodes.
    assert max(decode_rows) == 3
    assert len(decode_rows) < 20
    # And their outputs interleave in time: each started before any other finished.
    firsts = [r.arrivals[0] for r in results]
    lasts = [r.arrivals[-1] for r in results]
    assert max(firsts) < min(lasts)


async def test_n_choices_share_one_prefill(engine: TorchEngine) -> None:
    prompt = PROMPTS[1]
    with recorded_forwards(engine.model) as calls:
        got = await collect(engine, make_request("n3", prompt, temperature=0.0, n=3, max_tokens=5))
    prefills = [(rows, width) for rows, width in calls if width > 1]
    assert prefills == [(1, len(prompt))]
    expected = greedy_without_cache(engine.model, prompt, 5)
    assert got.tokens == {0: expected, 1: expected, 2: expected}


async def test_n_sampled_choices_differ_and_repeat_with_their_seed(engine: TorchEngine) -> None:
    req = make_request("ns", temperature=1.0, seed=11, n=3, max_tokens=10, ignore_eos=True)
    first = await collect(engine, req)
    again = await collect(engine, make_request("ns2", **_params_of(req)))
    assert len({tuple(t) for t in first.tokens.values()}) == 3
    assert again.tokens == first.tokens


def _params_of(req: Any) -> dict[str, Any]:
    p = req.params
    return {
        "temperature": p.temperature,
        "seed": p.seed,
        "n": p.n,
        "max_tokens": p.max_tokens,
        "ignore_eos": p.ignore_eos,
    }


# ---- stopping -------------------------------------------------------------------------


async def test_max_tokens_ends_with_length(engine: TorchEngine) -> None:
    got = await collect(engine, make_request("len", temperature=0.0, max_tokens=4))
    assert len(got.tokens[0]) == 4
    assert got.finish() == EngineFinish.LENGTH


async def test_eos_ends_the_choice_and_is_not_emitted(engine: TorchEngine) -> None:
    req = make_request("eos", temperature=0.0, logit_bias={TINY_EOS: 100.0})
    got = await collect(engine, req)
    assert got.tokens[0] == []
    assert got.finish() == EngineFinish.EOS


async def test_ignore_eos_keeps_generating(engine: TorchEngine) -> None:
    req = make_request(
        "ign", temperature=0.0, logit_bias={TINY_EOS: 100.0}, ignore_eos=True, max_tokens=5
    )
    got = await collect(engine, req)
    assert got.tokens[0] == [TINY_EOS] * 5
    assert got.finish() == EngineFinish.LENGTH


async def test_min_tokens_suppresses_eos_until_reached(engine: TorchEngine) -> None:
    req = make_request(
        "min", temperature=0.0, logit_bias={TINY_EOS: 100.0}, min_tokens=4, max_tokens=10
    )
    got = await collect(engine, req)
    assert len(got.tokens[0]) == 4 and TINY_EOS not in got.tokens[0]
    assert got.finish() == EngineFinish.EOS


async def test_stop_token_id_ends_with_stop_token(engine: TorchEngine) -> None:
    expected = greedy_without_cache(engine.model, PROMPTS[0], 10)
    stop = expected[3]
    cut = expected.index(stop)  # the first time the stop token comes up
    req = make_request(
        "stop", PROMPTS[0], temperature=0.0, max_tokens=10, stop_token_ids=frozenset({stop})
    )
    got = await collect(engine, req)
    assert got.tokens[0] == expected[: cut + 1]  # the stop token is included
    assert got.finish() == EngineFinish.STOP_TOKEN
    assert got.finishes[0].stop_token_id == stop


async def test_logit_bias_forces_a_token(engine: TorchEngine) -> None:
    got = await collect(engine, make_request("bias", temperature=0.7, logit_bias={77: 100.0}))
    assert got.tokens[0] == [77] * 8


async def test_top_k_one_equals_greedy(engine: TorchEngine) -> None:
    greedy = await collect(engine, make_request("tk0", temperature=0.0, max_tokens=10))
    topk1 = await collect(engine, make_request("tk1", temperature=1.3, top_k=1, max_tokens=10))
    assert topk1.tokens == greedy.tokens


async def test_penalties_change_the_output(engine: TorchEngine) -> None:
    plain = await collect(engine, make_request("pen0", temperature=0.0, max_tokens=16))
    penalised = await collect(
        engine, make_request("pen1", temperature=0.0, max_tokens=16, frequency_penalty=2.0)
    )
    # A penalised greedy stream never repeats a token while fresh ones are near the top.
    assert plain.tokens != penalised.tokens
    assert len(set(penalised.tokens[0])) > len(set(plain.tokens[0]))


# ---- logprobs -------------------------------------------------------------------------


async def test_logprobs_and_top_logprobs(engine: TorchEngine) -> None:
    prompt = PROMPTS[1]
    req = make_request("lp", prompt, temperature=0.0, max_tokens=6, logprobs=True, top_logprobs=4)
    got = await collect(engine, req)
    lps = got.logprobs[0]
    assert [lp.token_id for lp in lps] == got.tokens[0]
    for lp in lps:
        assert len(lp.top) == 4
        assert lp.top[0] == (lp.token_id, lp.logprob)  # greedy: the chosen token is top-1
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
    with torch.inference_mode():
        first = torch.log_softmax(engine.model(torch.tensor([prompt])).logits[0, -1], -1)
    assert lps[0].logprob == pytest.approx(float(first[lps[0].token_id]), abs=1e-4)


async def test_no_logprobs_unless_asked(engine: TorchEngine) -> None:
    got = await collect(engine, make_request("nolp", temperature=0.0))
    assert got.logprobs == {}


# ---- seeds ----------------------------------------------------------------------------


async def test_same_seed_same_tokens_alone_and_inside_a_busy_batch(engine: TorchEngine) -> None:
    def seeded(rid: str) -> Any:
        return make_request(rid, PROMPTS[1], temperature=0.9, seed=1234, max_tokens=24, top_p=0.95)

    alone = await collect(engine, seeded("s-alone"))
    assert (await collect(engine, seeded("s-alone-2"))).tokens == alone.tokens

    # Busy: unseeded neighbours of other widths join before, during and after the seeded
    # request, and leave at different steps.
    tasks: list[asyncio.Task[Collected]] = []

    def spawn(req: Any, on_batch: Any = None) -> None:
        tasks.append(asyncio.ensure_future(collect(engine, req, on_batch=on_batch)))

    def neighbour(rid: str, prompt: list[int], n: int) -> Any:
        return make_request(rid, prompt, temperature=1.0, max_tokens=n, ignore_eos=True)

    def on_seeded(k: int) -> None:
        if k == 3:
            spawn(neighbour("nb-mid", PROMPTS[3], 30))
        if k == 9:
            spawn(neighbour("nb-late", PROMPTS[2], 5))

    def on_early(k: int) -> None:
        if k == 2:
            spawn(seeded("s-busy"), on_seeded)

    spawn(neighbour("nb-early", PROMPTS[0], 12), on_early)
    spawn(neighbour("nb-first", PROMPTS[2], 40))
    await wait_for(lambda: len(tasks) == 5)
    results = await asyncio.gather(*tasks)
    busy = results[2]  # spawn order: nb-early, nb-first, s-busy, nb-mid, nb-late
    assert busy.tokens == alone.tokens
    assert len(set(alone.tokens[0])) > 3  # it really sampled


# ---- cancellation, deadlines, queueing ------------------------------------------------


async def test_closing_the_iterator_cancels_at_the_next_step(engine: TorchEngine) -> None:
    other = asyncio.ensure_future(collect(engine, long_request("bystander", max_tokens=30)))
    stream = open_stream(engine, long_request("closer"))
    await anext(stream)
    # The bystander may be admitted a step later than the closer on a busy machine.
    await wait_for(lambda: engine.stats().active_requests == 2, within=2.0)
    await anext(stream)
    await stream.aclose()
    await wait_for(lambda: engine.stats().active_requests == 1, within=2.0)
    bystander = await other
    assert bystander.finish() == EngineFinish.LENGTH and len(bystander.tokens[0]) == 30
    assert engine.stats().active_requests == 0


async def test_requests_held_counts_what_the_engine_owes_not_what_its_reader_left_unread(
    engine: TorchEngine,
) -> None:
    """inference.engine_watch judges an engine by what it holds: a finished request whose
    reader has not taken its outputs is no longer the engine's."""
    stream = open_stream(engine, long_request("held", max_tokens=8))
    await anext(stream)
    assert engine.requests_held == 1
    await wait_for(lambda: engine.requests_held == 0)  # done; 7 tokens still unread
    rest = [output async for outputs in stream for output in outputs]
    assert sum(len(output.token_ids) for output in rest) == 7


async def test_cancelling_the_reader_task_cancels_the_request(engine: TorchEngine) -> None:
    started = asyncio.Event()

    async def reader() -> None:
        async for _ in engine.generate(long_request("task")):
            started.set()

    task = asyncio.ensure_future(reader())
    await started.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await wait_for(lambda: engine.stats().active_requests == 0, within=2.0)


async def test_finish_choice_ends_one_choice_only(engine: TorchEngine) -> None:
    req = long_request("fc", n=2, max_tokens=20)

    def on_batch(k: int) -> None:
        if k == 2:
            engine.finish_choice("fc", 1)

    got = await collect(engine, req, on_batch)
    assert got.finish(1) == EngineFinish.CANCELLED
    assert got.finish(0) == EngineFinish.LENGTH
    assert len(got.tokens[0]) == 20 and len(got.tokens[1]) < 20


async def test_deadline_ends_with_time_limit(engine: TorchEngine) -> None:
    req = long_request("dl", deadline=time.monotonic() + 0.3)
    got = await collect(engine, req)
    assert got.finish() == EngineFinish.TIME_LIMIT
    assert 0 < len(got.tokens[0]) < 400


async def test_extra_requests_queue_until_rows_free_up(small_engine: TorchEngine) -> None:
    seen_queued: list[int] = []
    generated_before = small_engine.stats().generated_tokens
    reqs = [long_request(f"q{i}", max_tokens=15) for i in range(3)]
    tasks = [asyncio.ensure_future(collect(small_engine, r)) for r in reqs]
    await wait_for(lambda: small_engine.stats().active_requests == 2)
    seen_queued.append(small_engine.stats().queued_requests)
    results = await asyncio.gather(*tasks)
    assert seen_queued == [1]
    assert all(r.finish() == EngineFinish.LENGTH and len(r.tokens[0]) == 15 for r in results)
    stats = small_engine.stats()
    assert (stats.active_requests, stats.queued_requests, stats.kv_cache_usage) == (0, 0, 0.0)
    assert stats.generated_tokens - generated_before == 45


async def test_deadline_passing_in_the_queue(small_engine: TorchEngine) -> None:
    blocker = asyncio.ensure_future(collect(small_engine, long_request("blk", n=2, max_tokens=60)))
    await wait_for(lambda: small_engine.stats().active_requests == 1)
    late = await collect(small_engine, long_request("late", deadline=time.monotonic() + 0.05))
    assert late.finish() == EngineFinish.TIME_LIMIT and late.tokens[0] == []
    assert small_engine.stats().queued_requests == 0
    await blocker


async def test_cancelled_while_queued_leaves_the_queue(small_engine: TorchEngine) -> None:
    blocker = asyncio.ensure_future(collect(small_engine, long_request("blk2", n=2, max_tokens=60)))
    await wait_for(lambda: small_engine.stats().active_requests == 1)
    waiting = asyncio.ensure_future(collect(small_engine, long_request("waiting")))
    await wait_for(lambda: small_engine.stats().queued_requests == 1)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await wait_for(lambda: small_engine.stats().queued_requests == 0, within=2.0)
    await blocker
    assert small_engine.stats().active_requests == 0


# ---- validation, faults, lifecycle ----------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "params", "match"),
    [
        ([], {}, "no tokens"),
        ([5, 999], {}, "prompt token ids"),
        ([5], {"max_tokens": 600}, "maximum context length"),
        ([5], {"logit_bias": {300: 1.0}}, "logit_bias"),
        ([5], {"stop_token_ids": frozenset({-1})}, "stop_token_ids"),
        ([5], {"n": 9}, "n must"),
    ],
)
async def test_bad_requests_raise_request_errors(
    engine: TorchEngine, prompt: list[int], params: dict[str, Any], match: str
) -> None:
    with pytest.raises(EngineRequestError, match=match):
        await collect(engine, make_request("bad", prompt, **params))
    assert engine.stats().active_requests == 0


async def test_duplicate_running_request_id_is_refused(engine: TorchEngine) -> None:
    stream = open_stream(engine, long_request("dup"))
    await anext(stream)
    with pytest.raises(EngineRequestError, match="already running"):
        await collect(engine, make_request("dup"))
    await stream.aclose()
    await wait_for(lambda: engine.stats().active_requests == 0)


async def test_a_step_fault_fails_its_requests_and_the_loop_survives(
    small_engine: TorchEngine,
) -> None:
    model = small_engine.model
    calls = 0
    original = model.forward

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # a decode step of the running request
            raise RuntimeError("simulated kernel failure")
        return original(*args, **kwargs)

    model.forward = flaky  # type: ignore[method-assign]
    try:
        with pytest.raises(TorchEngineError, match="simulated kernel failure"):
            await collect(small_engine, long_request("victim", max_tokens=10))
    finally:
        del model.forward
    assert small_engine.stats().active_requests == 0
    after = await collect(small_engine, make_request("after", temperature=0.0, max_tokens=3))
    assert after.finish() == EngineFinish.LENGTH and len(after.tokens[0]) == 3


async def test_shutdown_cancels_running_requests_and_refuses_new_ones(tiny_llama_dir: Path) -> None:
    eng = TorchEngine(tiny_llama_dir)
    await eng.start()
    running = asyncio.ensure_future(collect(eng, long_request("run")))
    await wait_for(lambda: eng.stats().active_requests == 1)
    await eng.shutdown()
    got = await running
    assert got.finish() == EngineFinish.CANCELLED
    with pytest.raises(EngineUnavailableError):
        await collect(eng, make_request("late"))


async def test_generate_before_start_is_unavailable(tiny_llama_dir: Path) -> None:
    with pytest.raises(EngineUnavailableError):
        await collect(TorchEngine(tiny_llama_dir), make_request("early"))


@pytest.mark.parametrize("checkpoint", ["tiny_mistral_dir", "tiny_qwen2_dir"])
async def test_other_architectures_batch_exactly_too(
    checkpoint: str, request: pytest.FixtureRequest
) -> None:
    """Mistral and Qwen2 (attention biases, 152k vocabulary) through the same batching path."""
    eng = TorchEngine(request.getfixturevalue(checkpoint), max_batch_size=4)
    await eng.start()
    try:
        prompts = [[1, 20, 30, 40, 50, 60, 70], [1, 99], [1, 500, 600, 700]]
        together = await asyncio.gather(
            *(
                collect(eng, make_request(f"{checkpoint}{i}", p, temperature=0.0, max_tokens=6))
                for i, p in enumerate(prompts)
            )
        )
        for prompt, got in zip(prompts, together, strict=True):
            assert got.tokens[0] == greedy_without_cache(eng.model, prompt, 6)
    finally:
        await eng.shutdown()
