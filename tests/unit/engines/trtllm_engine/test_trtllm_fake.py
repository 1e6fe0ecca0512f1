"""The fake executor itself follows TensorRT-LLM 1.2.1's rules (named in its docstring)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.fakes.trtllm_fixtures import write_fake_engine
from tests.unit.engines.trtllm_engine.helpers import MODEL_ID, VOCAB


@pytest.fixture
def run(fake_trtllm: ModuleType, tmp_path: Path) -> Iterator[Any]:
    """`run(request, **executor_config)`: every response of one request, executor shut down."""
    executors: list[Any] = []

    def go(request: Any, engine: dict[str, Any] | None = None, **config: Any) -> list[Any]:
        limits = {"max_input_len": 96, "max_seq_len": 128, "max_num_tokens": 64, **(engine or {})}
        engine_dir = write_fake_engine(
            tmp_path / f"e{len(executors)}", model_id=MODEL_ID, vocab_size=VOCAB, **limits
        )
        executor = fake_trtllm.Executor(
            engine_dir, fake_trtllm.ModelType.DECODER_ONLY, fake_trtllm.ExecutorConfig(**config)
        )
        executors.append(executor)
        return responses_of(executor, request)

    yield go
    for executor in executors:
        executor.shutdown()


def responses_of(executor: Any, request: Any) -> list[Any]:
    """Every response of `request`, run on `executor` to its final or error response."""
    request_id = executor.enqueue_request(request)
    responses: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for response in executor.await_responses(timeout=timedelta(milliseconds=20)):
            assert response.request_id == request_id
            responses.append(response)
            if response.has_error() or response.result.is_final:
                return responses
    raise AssertionError("the fake executor never finished the request")


def greedy(fake: ModuleType, prompt: list[int], **kwargs: Any) -> Any:
    return fake.Request(
        prompt,
        4,
        sampling_config=fake.SamplingConfig(1, top_k=1, **kwargs),
        output_config=fake.OutputConfig(return_log_probs=True, exclude_input_from_output=True),
    )


def logprobs_of(responses: list[Any]) -> list[float]:
    return list(responses[-1].result.log_probs[0])


def test_normalize_log_probs_default_makes_greedy_read_zero(
    fake_trtllm: ModuleType, run: Any
) -> None:
    # samplingTopKKernels.cu: normalized -> log(p / sum of the top-k p); top_k=1 -> 0.0.
    assert logprobs_of(run(greedy(fake_trtllm, [1, 2, 3]))) == pytest.approx([0.0] * 4)


def test_normalize_log_probs_off_gives_the_models_log_softmax(
    fake_trtllm: ModuleType, run: Any
) -> None:
    responses = run(greedy(fake_trtllm, [1, 2, 3]), normalize_log_probs=False)
    tokens = responses[-1].result.output_token_ids[0]
    assert logprobs_of(responses) == pytest.approx(
        [fake_trtllm.fake_logprob(t, VOCAB) for t in tokens]
    )


def test_normalized_top_k_renormalises_over_the_k_best(fake_trtllm: ModuleType, run: Any) -> None:
    request = fake_trtllm.Request(
        [4, 5],
        3,
        sampling_config=fake_trtllm.SamplingConfig(1, top_k=2, seed=9),
        output_config=fake_trtllm.OutputConfig(
            return_log_probs=True, exclude_input_from_output=True
        ),
    )
    responses = run(request)
    for token, value in zip(
        responses[-1].result.output_token_ids[0], logprobs_of(responses), strict=True
    ):
        logits = fake_trtllm.fake_generation_logits(token, VOCAB)  # token first, then token + 1
        kept = [logits[token], logits[(token + 1) % VOCAB]]
        assert value == pytest.approx(logits[token] - math.log(sum(map(math.exp, kept))))


def test_presence_penalty_counts_the_prompt_unless_ignored(
    fake_trtllm: ModuleType, run: Any
) -> None:
    prompt = next(
        p
        for p in (list(range(i, i + 20)) for i in range(5000))
        if fake_trtllm.fake_token(p, 0, 0, VOCAB) in p
    )
    token = fake_trtllm.fake_token(prompt, 0, 0, VOCAB)
    raw = fake_trtllm.fake_generation_logits(token, VOCAB)
    penalised = list(raw)
    for seen in set(prompt):  # presence: every prompt token, once
        penalised[seen] -= 2.0
    expected = penalised[token] - math.log(sum(map(math.exp, penalised)))
    counted = run(greedy(fake_trtllm, prompt, presence_penalty=2.0), normalize_log_probs=False)
    assert logprobs_of(counted)[0] == pytest.approx(expected)
    ignored = run(
        greedy(fake_trtllm, prompt, presence_penalty=2.0, prompt_ignore_length=len(prompt)),
        normalize_log_probs=False,
    )
    assert logprobs_of(ignored)[0] == pytest.approx(fake_trtllm.fake_logprob(token, VOCAB))


def test_prompt_limit_is_the_executors_rule(fake_trtllm: ModuleType, run: Any) -> None:
    # Chunked context: maxSequenceLen - 1 = 127, above the build's max_input_len of 96.
    accepted = run(greedy(fake_trtllm, list(range(127))), enable_chunked_context=True)
    assert not accepted[-1].has_error()
    refused = run(greedy(fake_trtllm, list(range(128))), enable_chunked_context=True)
    # As the real executor words it: fetchNewRequests' prefix, then TllmException::what().
    assert refused[-1].error_msg.startswith(
        "Encountered an error when fetching new request: Prompt length (128) exceeds maximum "
        "input length (127)."
    )
    # Without it: min(maxSequenceLen - 1, maxNumTokens) = 64.
    refused = run(greedy(fake_trtllm, list(range(65))))
    assert "(65) exceeds maximum input length (64)" in refused[-1].error_msg
    # Chunked context needs paged context FMHA; without it the executor drops it.
    engine = {"paged_context_fmha": False}
    refused = run(greedy(fake_trtllm, list(range(65))), engine=engine, enable_chunked_context=True)
    assert "(65) exceeds maximum input length (64)" in refused[-1].error_msg


def test_streaming_limit_counts_the_clipped_max_tokens(fake_trtllm: ModuleType, run: Any) -> None:
    # executorImpl.cpp fetchNewRequests: streaming without chunked context under
    # MAX_UTILIZATION needs prompt + max_new_tokens - 1 <= max input len, counted after
    # LlmRequest::validate clipped max_new_tokens to max_seq_len - prompt.
    def streamed(max_tokens: int) -> Any:
        return fake_trtllm.Request(list(range(10)), max_tokens, streaming=True)

    policy = fake_trtllm.SchedulerConfig(fake_trtllm.CapacitySchedulerPolicy.MAX_UTILIZATION)
    config = {"enable_chunked_context": False, "scheduler_config": policy}
    # min(max_seq_len - 1, max_num_tokens) = 64: 10 + 60 - 1 > 64 is refused.
    refused = run(streamed(60), **config)
    assert "potentially greater than max input length" in refused[-1].error_msg
    # max_num_tokens 256: limit 127; 1000 tokens clip to 118, and 10 + 118 - 1 = 127 fits.
    served = run(streamed(1000), engine={"max_num_tokens": 256}, **config)
    assert not served[-1].has_error(), served[-1].error_msg
    assert served[-1].result.is_final


@pytest.mark.parametrize(
    ("engine", "reused"),
    [({}, 2), ({"gather_context_logits": True}, 0), ({"paged_context_fmha": False}, 0)],
)
def test_block_reuse_follows_fix_executor_config(
    fake_trtllm: ModuleType, tmp_path: Path, engine: dict[str, Any], reused: int
) -> None:
    # trtGptModelInflightBatching.cpp fixExecutorConfig: reuse asked for, yet off without
    # paged context FMHA or on an engine that gathers context logits.
    engine_dir = write_fake_engine(tmp_path / "e", model_id=MODEL_ID, vocab_size=VOCAB, **engine)
    config = fake_trtllm.ExecutorConfig(kv_cache_config=fake_trtllm.KvCacheConfig(True))
    executor = fake_trtllm.Executor(engine_dir, fake_trtllm.ModelType.DECODER_ONLY, config)
    try:
        output = fake_trtllm.OutputConfig(return_perf_metrics=True)
        counts = []
        for _ in range(2):  # 70 tokens: two full blocks of 32 to reuse the second time
            request = fake_trtllm.Request(list(range(70)), 1, output_config=output)
            final = responses_of(executor, request)[-1]
            assert not final.has_error() and final.result.is_final
            counts.append(final.result.request_perf_metrics.kv_cache_metrics.num_reused_blocks)
        assert counts == [0, reused]
    finally:
        executor.shutdown()


def test_max_batch_size_above_the_engines_is_refused(
    fake_trtllm: ModuleType, tmp_path: Path
) -> None:
    # trtGptModel.h, TrtGptModel constructor: TLLM_CHECK, not a silent clip.
    engine_dir = write_fake_engine(
        tmp_path / "e", model_id=MODEL_ID, vocab_size=VOCAB, max_batch_size=4
    )
    config = fake_trtllm.ExecutorConfig(max_batch_size=8)
    with pytest.raises(RuntimeError, match=r"max batch size \(8\) must not exceed .* \(4\)"):
        fake_trtllm.Executor(engine_dir, fake_trtllm.ModelType.DECODER_ONLY, config)


def test_guided_params_without_a_guided_decoding_config_get_the_real_error(
    fake_trtllm: ModuleType, run: Any
) -> None:
    guided = fake_trtllm.GuidedDecodingParams(fake_trtllm.GuidedDecodingParams.GuideType.JSON)
    refused = run(fake_trtllm.Request([1], 2, guided_decoding_params=guided))
    assert "GuidedDecoder is not setup" in refused[-1].error_msg


def test_request_needs_a_prompt_and_max_tokens(fake_trtllm: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="mInputTokenIds"):
        fake_trtllm.Request([], 2)
    with pytest.raises(RuntimeError, match="mMaxNewTokens > 0"):
        fake_trtllm.Request([1], 0)


def test_embedding_bias_must_be_rank_one(fake_trtllm: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="getShape"):
        fake_trtllm.Request([1], 2, embedding_bias=torch.zeros(1, VOCAB))


def test_embedding_bias_dtype_must_match_the_logits(fake_trtllm: ModuleType, run: Any) -> None:
    def biased(dtype: torch.dtype) -> Any:
        return fake_trtllm.Request([1], 2, embedding_bias=torch.zeros(VOCAB, dtype=dtype))

    assert not run(biased(torch.float32))[-1].has_error()  # FP32 logits by default
    refused = run(biased(torch.float16))
    assert refused[-1].error_msg.startswith(
        "Encountered an error in forwardAsync function: Embedding bias data type must be same "
        "as model logits type."
    )
    # FP32 is converted for FP16 logits.
    assert not run(biased(torch.float32), engine={"logits_dtype": "float16"})[-1].has_error()


def test_generation_logits_need_the_executor_flag_only(fake_trtllm: ModuleType, run: Any) -> None:
    def asking() -> Any:
        return fake_trtllm.Request(
            [1], 2, output_config=fake_trtllm.OutputConfig(return_generation_logits=True)
        )

    assert "gather_generation_logits must be enabled" in run(asking())[-1].error_msg
    assert not run(asking(), gather_generation_logits=True)[-1].has_error()
