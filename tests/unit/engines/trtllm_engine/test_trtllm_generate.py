"""TrtllmEngine.generate over the fake executor: tokens, finishes, n > 1, logprobs, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from types import ModuleType
from typing import Any, cast

import pytest

from inference.engines.base import EngineFinish, EngineRequestError, SequenceOutput
from tests.unit.engines.trtllm_engine.helpers import (
    MAX_INPUT_LEN,
    MAX_SEQ_LEN,
    VOCAB,
    EngineFactory,
    collect,
    request,
)


def predicted(
    fake: ModuleType, prompt: list[int], seed: int, n: int, vocab: int = VOCAB
) -> list[int]:
    return [fake.fake_token(prompt, seed, step, vocab) for step in range(n)]


def prompt_where(fake: ModuleType, ok: object, *, seed: int = 0, n: int = 12) -> list[int]:
    """The first prompt [i, i+1, i+2] whose predicted tokens satisfy `ok(tokens)`."""
    for i in range(1000):
        prompt = [i, i + 1, i + 2]
        if ok(predicted(fake, prompt, seed, n)):  # type: ignore[operator]
            return prompt
    raise AssertionError("no prompt found")


def last_request(fake: ModuleType) -> Any:
    return fake.fake_instances[-1].fake_requests[-1]


async def test_greedy_streams_the_model_tokens_until_max_tokens(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    prompt = [11, 12, 13]
    out = await collect(engine, request(prompt, temperature=0.0, max_tokens=6))

    assert out.tokens() == predicted(fake_trtllm, prompt, 0, 6)
    assert out.finish() == EngineFinish.LENGTH
    assert len(out.batches) > 1  # streamed, not one final blob
    assert engine.stats().generated_tokens == 6
    sent = last_request(fake_trtllm)
    assert sent.streaming is True
    assert sent.output_config.exclude_input_from_output is True
    assert sent.sampling_config.top_k == 1
    assert sent.max_tokens == 6


async def test_sampling_params_map_onto_the_sampling_config(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    params: dict[str, Any] = dict(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=1234,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        min_tokens=2,
        n=3,
    )
    out = await collect(engine, request([1, 2, 3], **params))
    config = last_request(fake_trtllm).sampling_config

    assert (config.temperature, config.top_p, config.top_k) == (0.7, 0.9, 40)
    assert config.min_p == 0.05
    assert config.seed == 1234
    assert (config.repetition_penalty, config.presence_penalty) == (1.1, 0.5)
    assert config.frequency_penalty == -0.25
    assert config.min_tokens == 2
    assert config.num_return_sequences == 3
    assert config.beam_width == 1
    # Choice i samples with seed + i, exactly as SamplingParams.seed_for promises.
    for index in range(3):
        assert out.tokens(index) == predicted(fake_trtllm, [1, 2, 3], 1234 + index, 8)


async def test_neutral_values_stay_unset_and_sampling_always_sets_top_p(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    await collect(engine, request([1, 2, 3], temperature=1.0, max_tokens=2))
    config = last_request(fake_trtllm).sampling_config
    # Both top_k and top_p unset would make the executor greedy.
    assert config.top_p == 1.0
    assert config.top_k is None
    assert config.min_p is None
    assert config.repetition_penalty is None
    assert config.presence_penalty is None
    assert config.num_return_sequences is None


async def test_unseeded_requests_get_fresh_seeds(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    seeds = set()
    for _ in range(3):
        await collect(engine, request([5, 6, 7], temperature=1.0, max_tokens=1))
        seeds.add(last_request(fake_trtllm).sampling_config.seed)
    # The executor's default seed is 0 for everyone; the adapter must not leave it unset.
    assert None not in seeds
    assert len(seeds) == 3


async def test_n_choices_each_finish_exactly_once(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    out = await collect(engine, request([3, 4], temperature=0.8, seed=7, n=4, max_tokens=5))
    for index in range(4):
        assert out.tokens(index) == predicted(fake_trtllm, [3, 4], 7 + index, 5)
        assert out.finish(index) == EngineFinish.LENGTH
    assert len({tuple(out.tokens(i)) for i in range(4)}) == 4


async def test_end_id_ends_with_eos_and_the_eos_token_is_not_output(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    prompt = prompt_where(fake_trtllm, lambda t: t[3] not in t[:3])
    eos = predicted(fake_trtllm, prompt, 0, 4)[3]
    out = await collect(
        engine, request(prompt, temperature=0.0, max_tokens=10, eos=frozenset({eos}))
    )
    assert out.tokens() == predicted(fake_trtllm, prompt, 0, 3)
    assert out.finish() == EngineFinish.EOS
    sent = last_request(fake_trtllm)
    assert sent.end_id == eos
    assert sent.pad_id == 997  # generation_config.json's pad_token_id


async def test_second_eos_is_a_stop_word_and_also_ends_with_eos(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    # generation_config.json lists [998, 999]: 998 is the end_id, 999 a stop word. Make the
    # model emit 999 at step 2 by choosing the prompt, then check the adapter's EOS handling.
    prompt = prompt_where(fake_trtllm, lambda t: 999 in t[:6] and 998 not in t[:6])
    tokens = predicted(fake_trtllm, prompt, 0, 6)
    stop_at = tokens.index(999)
    out = await collect(
        engine, request(prompt, temperature=0.0, max_tokens=10, eos=frozenset({998, 999}))
    )
    sent = last_request(fake_trtllm)
    assert sent.end_id == 998
    assert sent.stop_words == [[999]]
    assert out.finish() == EngineFinish.EOS
    assert out.tokens() == tokens[:stop_at]  # eos never reaches the output


async def test_stop_token_ids_end_with_stop_token_and_keep_the_token(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    prompt = prompt_where(fake_trtllm, lambda t: t[2] not in t[:2])
    tokens = predicted(fake_trtllm, prompt, 0, 3)
    out = await collect(
        engine,
        request(prompt, temperature=0.0, stop_token_ids=frozenset({tokens[2]}), max_tokens=10),
    )
    final = out.finals()[0]
    assert final.finish == EngineFinish.STOP_TOKEN
    assert final.stop_token_id == tokens[2]
    assert out.tokens() == tokens


async def test_ignore_eos_disables_end_id(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    prompt = prompt_where(fake_trtllm, lambda t: t[1] not in t[:1])
    eos = predicted(fake_trtllm, prompt, 0, 2)[1]
    out = await collect(
        engine,
        request(prompt, temperature=0.0, max_tokens=6, ignore_eos=True, eos=frozenset({eos})),
    )
    assert last_request(fake_trtllm).end_id == -1
    assert out.tokens() == predicted(fake_trtllm, prompt, 0, 6)
    assert out.finish() == EngineFinish.LENGTH


async def test_min_tokens_defers_stop_ids_to_the_adapter(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    # A tiny vocabulary so the first token comes back soon after min_tokens.
    vocab = 6
    engine = await start_engine(vocab_size=vocab)
    for i in range(200):
        prompt = [i]
        tokens = predicted(fake_trtllm, prompt, 0, 20, vocab)
        again = [p for p in range(3, 20) if tokens[p] == tokens[0]]
        if again:
            break
    stop_id, stop_at = tokens[0], again[0]
    out = await collect(
        engine,
        request(
            prompt,
            temperature=0.0,
            min_tokens=3,
            stop_token_ids=frozenset({stop_id}),
            max_tokens=30,
        ),
    )
    # The executor would stop at position 0; the adapter only stops once 3 tokens exist.
    assert last_request(fake_trtllm).stop_words is None
    assert out.tokens() == tokens[: stop_at + 1]
    assert out.finish() == EngineFinish.STOP_TOKEN
    assert out.finals()[0].stop_token_id == stop_id


async def test_logprobs_follow_tokens_across_streamed_results(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    prompt = [21, 22, 23]
    out = await collect(engine, request(prompt, temperature=0.0, logprobs=True, max_tokens=7))
    logprobs = [lp for o in out.outputs() for lp in o.logprobs or []]
    assert [lp.token_id for lp in logprobs] == out.tokens()
    # The executor resends every log prob so far; each token must get its own, once. Greedy
    # reads the model's log-softmax, not the 0.0 of normalize_log_probs=True.
    assert [lp.logprob for lp in logprobs] == pytest.approx(
        [fake_trtllm.fake_logprob(token, VOCAB) for token in out.tokens()]
    )
    assert all(lp.logprob < 0.0 for lp in logprobs)
    assert last_request(fake_trtllm).output_config.return_log_probs is True
    assert fake_trtllm.fake_instances[-1].fake_config.normalize_log_probs is False


async def test_sampled_logprobs_without_top_list_follow_temperature(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    # Without top_logprobs the value is the executor's: log-softmax after temperature (and
    # bias/penalties), before top-k/top-p truncation. docs/gpu.md documents the difference.
    engine = await start_engine()
    out = await collect(
        engine, request([7, 8], temperature=0.5, seed=3, logprobs=True, max_tokens=3)
    )
    for lp in (lp for o in out.outputs() for lp in o.logprobs or []):
        scaled = [x / 0.5 for x in fake_trtllm.fake_generation_logits(lp.token_id, VOCAB)]
        norm = math.log(sum(math.exp(x) for x in scaled))
        assert lp.logprob == pytest.approx(scaled[lp.token_id] - norm, rel=1e-4)


async def test_top_logprobs_need_no_build_flag(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine(top_logprobs=True)  # built without --gather_generation_logits
    out = await collect(
        engine, request([1, 2], temperature=0.0, logprobs=True, top_logprobs=3, max_tokens=4)
    )
    assert fake_trtllm.fake_instances[-1].fake_config.gather_generation_logits is True
    assert last_request(fake_trtllm).output_config.return_generation_logits is True
    for lp in (lp for o in out.outputs() for lp in o.logprobs or []):
        # log_softmax of the fake's logits for this step (the chosen token ranks first).
        logits = fake_trtllm.fake_generation_logits(lp.token_id, VOCAB)
        norm = math.log(sum(math.exp(value) for value in logits))
        ids = [token for token, _ in lp.top]
        assert ids == [lp.token_id, (lp.token_id + 1) % VOCAB, (lp.token_id + 2) % VOCAB]
        assert [value for _, value in lp.top] == pytest.approx(
            [logits[i] - norm for i in ids], abs=1e-5
        )


async def test_top_logprobs_are_refused_unless_the_model_option_turns_logits_on(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    """The executor flag costs every request GPU memory (docs/gpu.md), so it is opt-in."""
    engine = await start_engine()
    assert fake_trtllm.fake_instances[-1].fake_config.gather_generation_logits is False
    with pytest.raises(EngineRequestError, match="does not serve top_logprobs") as caught:
        await collect(engine, request([1, 2], logprobs=True, top_logprobs=2, max_tokens=2))
    assert caught.value.param == "top_logprobs"
    assert fake_trtllm.fake_instances[-1].fake_requests == []  # refused before the executor
    # logprobs alone need no generation logits.
    out = await collect(engine, request([1, 2], temperature=0.0, logprobs=True, max_tokens=2))
    assert all(o.logprobs for o in out.outputs() if o.token_ids)


async def test_only_requests_with_top_logprobs_ask_for_logits(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine(top_logprobs=True)
    await collect(engine, request([1, 2], temperature=0.0, logprobs=True, max_tokens=2))
    assert last_request(fake_trtllm).output_config.return_generation_logits is False


async def test_chosen_logprob_equals_its_top_entry_whatever_the_sampling(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    # Temperature, a penalty and a bias change the executor's own log prob; the chosen value
    # and the top list must still come from one distribution.
    engine = await start_engine(top_logprobs=True)
    out = await collect(
        engine,
        request(
            [5, 6, 5],
            temperature=0.7,
            seed=11,
            presence_penalty=0.5,
            logit_bias={3: 2.0},
            logprobs=True,
            top_logprobs=5,
            max_tokens=6,
        ),
    )
    logprobs = [lp for o in out.outputs() for lp in o.logprobs or []]
    assert logprobs
    for lp in logprobs:
        top = dict(lp.top)
        assert lp.token_id in top  # the fake's chosen token always ranks first
        assert lp.logprob == pytest.approx(top[lp.token_id], abs=1e-6)
        assert lp.logprob == pytest.approx(fake_trtllm.fake_logprob(lp.token_id, VOCAB), abs=1e-5)


async def test_presence_and_frequency_penalties_skip_the_prompt(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    # A prompt that contains the token the model generates first.
    prompt = next(
        p
        for p in (list(range(i, i + 20)) for i in range(5000))
        if predicted(fake_trtllm, p, 0, 1)[0] in p
    )
    out = await collect(
        engine,
        request(
            prompt,
            temperature=0.0,
            presence_penalty=1.5,
            frequency_penalty=0.5,
            logprobs=True,
            max_tokens=1,
        ),
    )
    sent = last_request(fake_trtllm).sampling_config
    assert sent.prompt_ignore_length == len(prompt)
    token = out.tokens()[0]
    logprob = out.outputs()[0].logprobs[0].logprob  # type: ignore[index]
    # Nothing was generated before the first token, so no penalty applies to it.
    assert logprob == pytest.approx(fake_trtllm.fake_logprob(token, VOCAB), abs=1e-6)


async def test_logit_bias_becomes_an_fp32_embedding_bias(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    out = await collect(
        engine, request([1, 2], temperature=0.0, logit_bias={42: 100.0, 7: -3.5}, max_tokens=3)
    )
    bias = last_request(fake_trtllm).embedding_bias
    assert str(bias.dtype) == "torch.float32"
    assert tuple(bias.shape) == (VOCAB,)
    assert (bias[42].item(), bias[7].item(), float(bias.abs().sum())) == (100.0, -3.5, 103.5)
    assert out.tokens() == [42, 42, 42]  # +100 forces the token


async def test_logit_bias_outside_the_vocabulary_is_a_request_error(
    start_engine: EngineFactory,
) -> None:
    engine = await start_engine()
    with pytest.raises(EngineRequestError, match="outside the model's vocabulary"):
        await collect(engine, request([1], logit_bias={VOCAB + 5: 1.0}))


async def test_logit_bias_on_an_engine_with_bf16_logits_is_a_request_error(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    # The executor takes an FP32 bias only for FP32 or FP16 logits; for any other type the
    # decoder setup throws and every active request fails, so the adapter refuses it first.
    engine = await start_engine(engine={"logits_dtype": "bfloat16"})
    sent = len(fake_trtllm.fake_instances[-1].fake_requests)
    with pytest.raises(EngineRequestError, match="logits are bfloat16") as refused:
        await collect(engine, request([1], logit_bias={3: 1.0}))
    assert refused.value.param == "logit_bias"
    assert len(fake_trtllm.fake_instances[-1].fake_requests) == sent
    out = await collect(engine, request([1], temperature=0.0, max_tokens=2))
    assert len(out.tokens()) == 2


async def test_constrained_output_on_an_engine_with_bf16_logits_is_a_request_error(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    # GuidedDecoder::execute masks only FP32 and FP16 logits; for others it throws in the
    # decoder step and every active request fails, so the adapter refuses it first.
    engine = await start_engine(engine={"logits_dtype": "bfloat16"})
    sent = len(fake_trtllm.fake_instances[-1].fake_requests)
    constrained = dataclasses.replace(request([1]), constraint=cast(Any, object()))
    with pytest.raises(EngineRequestError, match="logits are bfloat16") as refused:
        await collect(engine, constrained)
    assert refused.value.param == "constraint"
    assert len(fake_trtllm.fake_instances[-1].fake_requests) == sent


async def test_longest_prompt_is_the_executors_rule_with_chunked_context(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()  # chunked context on: maxSequenceLen - 1
    assert (
        engine.max_input_len == MAX_SEQ_LEN - 1 == fake_trtllm.fake_instances[-1].fake_max_input_len
    )
    out = await collect(engine, request(list(range(MAX_SEQ_LEN - 1)), temperature=0.0))
    assert out.finish() == EngineFinish.LENGTH  # above build max_input_len, still accepted
    with pytest.raises(
        EngineRequestError,
        match=rf"\({MAX_SEQ_LEN}\) exceeds maximum input length \({MAX_SEQ_LEN - 1}\)",
    ) as refused:
        await collect(engine, request(list(range(MAX_SEQ_LEN))))
    # The client gets the executor's message, not its prefix, source line and backtrace.
    assert str(refused.value).startswith("Prompt length")
    assert str(refused.value).endswith("for how maximum input length is set")
    assert engine.stats().active_requests == 0


async def test_longest_prompt_without_chunked_context_is_bounded_by_max_num_tokens(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine(enable_chunked_context=False, max_num_tokens=64)
    assert engine.max_input_len == 64 == fake_trtllm.fake_instances[-1].fake_max_input_len
    with pytest.raises(EngineRequestError, match=r"\(65\) exceeds maximum input length \(64\)"):
        await collect(engine, request(list(range(65))))


async def test_max_tokens_past_the_sequence_limit_ends_with_length(
    start_engine: EngineFactory,
) -> None:
    engine = await start_engine()
    prompt = list(range(MAX_INPUT_LEN))
    out = await collect(engine, request(prompt, temperature=0.0, max_tokens=500))
    assert len(out.tokens()) == MAX_SEQ_LEN - MAX_INPUT_LEN
    assert out.finish() == EngineFinish.LENGTH


async def test_a_deadline_becomes_the_time_left_as_allotted_time(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    before = time.monotonic()
    deadline = before + 60.0
    await collect(engine, request([1, 2], temperature=0.0, max_tokens=2, deadline=deadline))
    after = time.monotonic()
    allotted = last_request(fake_trtllm).allotted_time_ms
    assert isinstance(allotted, timedelta)
    # What was left of the deadline when the request was made (between the two readings).
    tick = timedelta(microseconds=1)  # timedelta's own rounding
    assert timedelta(seconds=deadline - after) - tick <= allotted
    assert allotted <= timedelta(seconds=deadline - before) + tick


async def test_a_passed_deadline_still_runs_and_ends_with_time_limit(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    deadline = time.monotonic() - 1.0
    out = await collect(
        engine,
        request([1, 2], temperature=0.0, max_tokens=500, ignore_eos=True, deadline=deadline),
    )
    # The executor is given its least allotted time, so that it ends the request TIMED_OUT.
    assert last_request(fake_trtllm).allotted_time_ms == timedelta(milliseconds=1)
    assert out.finish() == EngineFinish.TIME_LIMIT
    # The fake's steps are FAKE_STEP_INTERVAL_S (2 ms) apart: the second is past 1 ms.
    assert len(out.tokens()) <= 1


async def test_closing_the_iterator_cancels_the_executor_request(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    stream = cast(
        AsyncGenerator[list[SequenceOutput]],
        engine.generate(request([9, 9], temperature=0.0, max_tokens=100, ignore_eos=True)),
    )
    await anext(stream)
    assert engine.stats().active_requests == 1
    await stream.aclose()
    assert engine.stats().active_requests == 0
    executor = fake_trtllm.fake_instances[-1]
    for _ in range(200):
        if not executor.fake_unfinished_request_ids():
            break
        await asyncio.sleep(0.005)
    assert executor.fake_unfinished_request_ids() == set()


async def test_requests_held_counts_what_the_executor_owes_not_what_the_reader_left_unread(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    """inference.engine_watch judges an engine by what it holds: a request the executor has
    finished is retired (`_dispatch`), whether or not its reader took the outputs."""
    engine = await start_engine()
    stream = cast(
        AsyncGenerator[list[SequenceOutput]],
        engine.generate(request([7, 7], temperature=0.0, max_tokens=8, ignore_eos=True)),
    )
    first = await anext(stream)
    assert engine.requests_held == 1
    for _ in range(400):
        if not engine.requests_held:
            break
        await asyncio.sleep(0.005)
    assert engine.requests_held == 0
    rest = [output async for outputs in stream for output in outputs]
    assert sum(len(o.token_ids) for o in [*first, *rest]) == 8


async def test_cancelled_task_cancels_the_request(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    first = asyncio.Event()

    async def read() -> None:
        async for _ in engine.generate(
            request([8, 8], temperature=0.0, max_tokens=100, ignore_eos=True)
        ):
            first.set()

    task = asyncio.create_task(read())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().active_requests == 0
    assert fake_trtllm.fake_instances[-1].fake_requests  # it did reach the executor


async def test_finish_choice_with_one_choice_cancels_at_once(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    out = []
    async for batch in engine.generate(
        request([4, 4], request_id="r1", temperature=0.0, max_tokens=100, ignore_eos=True)
    ):
        out.extend(batch)
        if len(out) == 2:
            engine.finish_choice("r1", 0)
    assert [o.finish for o in out if o.finish] == [EngineFinish.CANCELLED]
    assert out[-1].finish == EngineFinish.CANCELLED
    assert len([t for o in out for t in o.token_ids]) < 100


async def test_finish_choice_of_one_of_n_drops_only_that_choice(
    fake_trtllm: ModuleType, start_engine: EngineFactory
) -> None:
    engine = await start_engine()
    outputs = []
    async for batch in engine.generate(
        request([6, 6], request_id="r2", temperature=1.0, seed=3, n=2, max_tokens=12)
    ):
        outputs.extend(batch)
        if any(o.index == 0 and o.token_ids for o in outputs) and not any(
            o.index == 0 and o.finish for o in outputs
        ):
            engine.finish_choice("r2", 0)
    zero = [o for o in outputs if o.index == 0]
    one = [o for o in outputs if o.index == 1]
    assert zero[-1].finish == EngineFinish.CANCELLED
    assert [o.finish for o in zero if o.finish] == [EngineFinish.CANCELLED]  # nothing after it
    assert [t for o in one for t in o.token_ids] == predicted(fake_trtllm, [6, 6], 4, 12)
    assert one[-1].finish == EngineFinish.LENGTH


async def test_cached_tokens_from_kv_block_reuse(start_engine: EngineFactory) -> None:
    engine = await start_engine()  # 32 tokens per block
    prompt = list(range(70))
    first = await collect(engine, request(prompt, temperature=0.0, max_tokens=2))
    second = await collect(engine, request(prompt, temperature=0.0, max_tokens=2))
    assert first.finals()[0].cached_tokens == 0
    # Two full blocks are reused; the last (partial) block is always recomputed.
    assert second.finals()[0].cached_tokens == 64
