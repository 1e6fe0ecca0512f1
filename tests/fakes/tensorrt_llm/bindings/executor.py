"""A fake `tensorrt_llm.bindings.executor` (TensorRT-LLM 1.2.1) for tests without a GPU.

The real module is a nanobind extension that needs an NVIDIA GPU, libcuda and a TensorRT-LLM
wheel from NVIDIA's package index, none of which exist on CI machines, so the adapter's tests
run against this stand-in instead. It keeps the real names, keyword signatures and the
behaviour the adapter relies on. Each behaviour names the source it copies; the source was read
through the code index, which holds single versions per file: "1.2.0rc2" marks files at commit
b35ac1b6 (tensorrt_llm/version.py there says 1.2.0rc2), other commits are named where they
matter. Paths are relative to the TensorRT-LLM repository root.

- `Executor` runs its own execution-loop thread; `await_responses(timeout=timedelta)` drains
  whatever responses are ready; after `shutdown()` every call but `shutdown` raises
  RuntimeError("Shutdown called...") as `TLLM_CHECK_WITH_INFO(!mShutdownCalled, ...)` does
  (cpp/tensorrt_llm/executor/executorImpl.cpp, Executor::Impl::enqueueRequests/awaitResponses).
- Streaming results carry only the newly generated tokens, but `log_probs` holds every log
  probability so far (as `LlmRequest::createResult` does); `is_final` is set on the last
  response of the request; with `num_return_sequences > 1` each sequence answers separately
  with its `sequence_index` and `is_sequence_final`, and child sequence i samples with
  seed + i (cpp/tensorrt_llm/batch_manager/llmRequest.cpp, LlmRequest::createChildRequest
  L317-346, seeds L329-342, at 119c6e60; log probs so far: createResult L152-156).
- `end_id` ends a sequence with END_ID and is NOT part of the output (issue #2190); stop words
  end it with STOP_WORDS and ARE part of it; `min_tokens` only masks `end_id`
  (cpp/tensorrt_llm/kernels/penaltyKernels.cu, batchApplyPenalty's "Min length" step L198-206
  at 249d93d5, a 2024 version: the newest stored).
- The longest prompt is the executor's own rule, not build_config.max_input_len
  (cpp/tensorrt_llm/batch_manager/trtGptModel.h, TrtGptModel constructor, L158-185 at
  commit c8c6df08): maxSequenceLen - 1 with chunked context; else
  min(maxSequenceLen - 1, maxNumTokens) when context FMHA and packed input (remove_input_padding)
  are on; else the build's max_input_len. Chunked context is switched off when the engine lacks
  paged context FMHA (executorImpl.cpp, fixExecutorConfig L68-86 at b35ac1b6), and a runtime
  max_num_tokens only counts when it is not above the build's (trtGptModel.h, L138-152). A
  longer prompt gets an error response with the real message (llmRequest.cpp,
  LlmRequest::validate L259-264 at 119c6e60); `prompt + max_tokens > max_seq_len` clips
  `max_tokens` (-> LENGTH; L293-302). Streaming without chunked
  context under any policy but GUARANTEED_NO_EVICT also needs prompt + max_tokens - 1 <= that
  limit (executorImpl.cpp, Executor::Impl::fetchNewRequests L1555-1563 at b35ac1b6).
- KV block reuse, when asked for, is off without paged context FMHA or on an engine built
  with gather_context_logits (trtGptModelInflightBatching.cpp, fixExecutorConfig L141-168 at
  b35ac1b6).
- `Request(embedding_bias=...)` must be rank 1 (cpp/tensorrt_llm/executor/requestImpl.h,
  checkEmbeddingBias L510-517, called by the constructor L62, at a678b91a); its dtype must
  be the engine's logits dtype, except that FP32 is converted for FP16 logits, else the request
  fails with "Embedding bias data type must be same as model logits type."
  (cpp/tensorrt_llm/batch_manager/createNewDecoderRequests.cpp, getEmbeddingBias L96-129 at
  b35ac1b6 = 1.2.0rc2). The real check runs in the decoder setup of the admitting step, and its
  exception fails every active request (executorImpl.cpp forwardAsync's catch L1792-1796 calls
  terminateActiveRequests L1670-1690, at b35ac1b6); the fake fails only this one. Its length
  must be the vocabulary size (initializeEmbeddingBias L248-250, same commit); the fake does not
  check that. The logits dtype is config.json's
  pretrained_config.logits_dtype (trtllm-build writes float32 unless told otherwise).
- Log probs (`OutputConfig.return_log_probs`) come from the processed distribution: raw logits
  + embedding bias, times 1/temperature, then repetition/presence/frequency penalties and the
  min_tokens end_id mask (penaltyKernels.cu, batchApplyPenalty L149-206 at 249d93d5), softmaxed
  over the vocabulary.
  With `ExecutorConfig.normalize_log_probs=True` (the default) the value is renormalised over
  the top-k set the token was drawn from, log(p / sum of the top-k p), so greedy (top_k=1)
  reads 0.0; with False it is log(p) (cpp/tensorrt_llm/kernels/samplingTopKKernels.cu,
  topKStage2Sampling, "outputLogProbs" comment and `normalizeLogProbs ? logProb - logf(sSum)
  : logProb`, L247-253 in topKStage2Sampling L130-277 at 03961722; with top_k and top_p both
  set, sSum is still the top-k mass, L184-214). A top_p-only request is renormalised over its
  nucleus here by analogy (the top-p kernel was not read).
- Presence and frequency penalties count the prompt's tokens too, except its first
  `SamplingConfig.prompt_ignore_length` tokens; the repetition penalty always counts the whole
  prompt (PR #8127, penaltyKernels.cu batchApplyPenalty; the stored 249d93d5 predates it and
  counts the whole prompt for all three, L101-147; in 1.2.0 GA's executor.h per PR
  #13633, position 14 of SamplingConfig's constructor).
- Generation logits need only `ExecutorConfig.gather_generation_logits` (or the build flag):
  `TrtGptModelInflightBatching::getGatherGenerationLogits()` returns
  `computeGenerationLogits() || mGatherGenerationLogits`
  (cpp/tensorrt_llm/batch_manager/trtGptModelInflightBatching.h L356-359 at 83ab45a5, the only
  stored version); a request asking without either fails with the real message
  (executorImpl.cpp, fetchNewRequests). They are the raw model logits, before bias,
  temperature and penalties.
- Guided decoding (`ExecutorConfig.guided_decoding_config`, `Request.guided_decoding_params`)
  is enforced with real xgrammar as the executor's GuidedDecoder does: see guided_decoding.py.
- `cancel_request` -> CANCELLED, `allotted_time_ms` -> TIMED_OUT, `get_latest_iteration_stats`
  drains per-iteration stats with KV-cache block counts.

What a real model computes is replaced by a deterministic function, `fake_token(prompt, seed,
step, vocab_size)`, so tests can predict every token. Greedy requests (top_k == 1) ignore the
seed, as greedy decoding does. A logit bias of +100 forces its token, -100 bans it. The raw
logits of a step are `fake_generation_logits(token, vocab_size)`: the chosen token ranks first.
Names starting with `fake_` / `FAKE_` exist only in this fake.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .guided_decoding import (
    FakeGuidedDecoder,
    GuidedDecodingConfig,
    GuidedDecodingParams,
)

__all__ = ["GuidedDecodingConfig", "GuidedDecodingParams"]  # re-exported, as the bindings do
__version__ = "1.2.1"

# Seconds between two iterations of the fake execution loop (one token per sequence each).
FAKE_STEP_INTERVAL_S = 0.002
# KV-cache capacity in tokens when KvCacheConfig.max_tokens is unset.
FAKE_KV_CAPACITY_TOKENS = 8192
# Every Executor built, newest last, so tests can inspect what the adapter configured.
fake_instances: list[Executor] = []


def fake_token(prompt: list[int], seed: int, step: int, vocab_size: int) -> int:
    """The token the fake model proposes at `step` (0-based) for this prompt and seed."""
    digest = hashlib.blake2b(f"{prompt}|{seed}|{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % vocab_size


def fake_logprob(token: int, vocab_size: int) -> float:
    """The model's log-softmax of a chosen token under `fake_generation_logits` (no bias,
    temperature or penalty applied)."""
    return _log_softmax(fake_generation_logits(token, vocab_size))[token]


def _log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    norm = top + math.log(sum(math.exp(value - top) for value in logits))
    return [value - norm for value in logits]


def fake_generation_logits(token: int, vocab_size: int) -> list[float]:
    """Raw logits the fake reports for one step: the chosen token ranks first, then +1, +2.

    The chosen token's logit depends on the token, so consecutive log probs differ.
    """
    logits = [0.0] * vocab_size
    logits[token] = 5.0 + (token % 7) * 0.5
    logits[(token + 1) % vocab_size] = 3.0
    logits[(token + 2) % vocab_size] = 1.0
    return logits


# ---------------------------------------------------------------------------------------------
# Enums (bindings.cpp, request.cpp, executorConfig.cpp)


class ModelType(enum.Enum):
    DECODER_ONLY = 0
    ENCODER_ONLY = 1
    ENCODER_DECODER = 2


class BatchingType(enum.Enum):
    STATIC = 0
    INFLIGHT = 1


class CapacitySchedulerPolicy(enum.Enum):
    MAX_UTILIZATION = 0
    GUARANTEED_NO_EVICT = 1
    STATIC_BATCH = 2


class ContextChunkingPolicy(enum.Enum):
    EQUAL_PROGRESS = 0
    FIRST_COME_FIRST_SERVED = 1


class CommunicationType(enum.Enum):
    MPI = 0


class CommunicationMode(enum.Enum):
    LEADER = 0
    ORCHESTRATOR = 1


class FinishReason(enum.Enum):
    NOT_FINISHED = 0
    END_ID = 1
    STOP_WORDS = 2
    LENGTH = 3
    TIMED_OUT = 4
    CANCELLED = 5


class RequestType(enum.Enum):
    REQUEST_TYPE_CONTEXT_AND_GENERATION = 0
    REQUEST_TYPE_CONTEXT_ONLY = 1
    REQUEST_TYPE_GENERATION_ONLY = 2


# How the real executor words an error response: the stage that caught it prefixes
# TllmException::what() (executorImpl.cpp at b35ac1b6: fetchNewRequests' catch L1653-1662,
# the prefix L1658; forwardAsync's catch L1792-1796, the prefix L1794), and what() is
# "<message> (<source file>:<line>)\n<backtrace>" (common/tllmException.cpp, TllmException
# L38-44, the format L43, at 015884d6); TLLM_CHECK and TLLM_CHECK_WITH_INFO messages start
# "[TensorRT-LLM][ERROR] Assertion failed: " (common/assert.h L36-50 at 2164cc8d, through
# tllmException.h throwRuntimeError L78-86 at 0c6a62a1), TLLM_THROW's do not.
_FETCH_PREFIX = "Encountered an error when fetching new request: "
_FORWARD_PREFIX = "Encountered an error in forwardAsync function: "


def _what(message: str, source: str, *, check: bool = False, stage: str = _FETCH_PREFIX) -> str:
    """An error response's text as the executor words it; `stage` is the catch that reports it."""
    prefix = "[TensorRT-LLM][ERROR] Assertion failed: " if check else ""
    return (
        f"{stage}{prefix}{message} (/fake/cpp/tensorrt_llm/{source}:0)\n1       0x0 fake backtrace"
    )


def _check(condition: bool, message: str) -> None:
    # TLLM_CHECK failures surface in Python as RuntimeError (tensorrt_llm::common::TllmException).
    if not condition:
        raise RuntimeError(message)


# ---------------------------------------------------------------------------------------------
# Configuration (executorConfig.cpp)


class DynamicBatchConfig:
    def __init__(
        self,
        enable_batch_size_tuning: bool,
        enable_max_num_tokens_tuning: bool,
        dynamic_batch_moving_average_window: int,
    ) -> None:
        self.enable_batch_size_tuning = enable_batch_size_tuning
        self.enable_max_num_tokens_tuning = enable_max_num_tokens_tuning
        self.dynamic_batch_moving_average_window = dynamic_batch_moving_average_window


class SchedulerConfig:
    def __init__(
        self,
        capacity_scheduler_policy: CapacitySchedulerPolicy = (
            CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
        ),
        context_chunking_policy: ContextChunkingPolicy | None = None,
        dynamic_batch_config: DynamicBatchConfig | None = None,
    ) -> None:
        _check(isinstance(capacity_scheduler_policy, CapacitySchedulerPolicy), "bad policy")
        self._policy = capacity_scheduler_policy
        self._chunking = context_chunking_policy
        self._dynamic = dynamic_batch_config

    # Read-only in the bindings (def_prop_ro).
    @property
    def capacity_scheduler_policy(self) -> CapacitySchedulerPolicy:
        return self._policy

    @property
    def context_chunking_policy(self) -> ContextChunkingPolicy | None:
        return self._chunking

    @property
    def dynamic_batch_config(self) -> DynamicBatchConfig | None:
        return self._dynamic


class KvCacheConfig:
    def __init__(
        self,
        enable_block_reuse: bool = True,
        max_tokens: int | None = None,
        max_attention_window: list[int] | None = None,
        sink_token_length: int | None = None,
        free_gpu_memory_fraction: float | None = None,
        host_cache_size: int | None = None,
        onboard_blocks: bool = True,
        cross_kv_cache_fraction: float | None = None,
        secondary_offload_min_priority: int | None = None,
        event_buffer_max_size: int = 0,
        *,
        enable_partial_reuse: bool = True,
        copy_on_partial_reuse: bool = True,
        use_uvm: bool = False,
        runtime_defaults: Any = None,
    ) -> None:
        if free_gpu_memory_fraction is not None:
            _check(
                0.0 <= free_gpu_memory_fraction <= 1.0,
                "freeGpuMemoryFraction must be a number between 0 and 1",
            )
        self.enable_block_reuse = enable_block_reuse
        self.max_tokens = max_tokens
        self.max_attention_window = max_attention_window
        self.sink_token_length = sink_token_length
        self.free_gpu_memory_fraction = free_gpu_memory_fraction
        self.host_cache_size = host_cache_size
        self.onboard_blocks = onboard_blocks
        self.cross_kv_cache_fraction = cross_kv_cache_fraction
        self.secondary_offload_min_priority = secondary_offload_min_priority
        self.event_buffer_max_size = event_buffer_max_size
        self.enable_partial_reuse = enable_partial_reuse
        self.copy_on_partial_reuse = copy_on_partial_reuse
        self.use_uvm = use_uvm


class ExecutorConfig:
    def __init__(
        self,
        max_beam_width: int = 1,
        scheduler_config: SchedulerConfig | None = None,
        kv_cache_config: KvCacheConfig | None = None,
        enable_chunked_context: bool = False,
        normalize_log_probs: bool = True,
        iter_stats_max_iterations: int = 1000,
        request_stats_max_iterations: int = 0,
        batching_type: BatchingType = BatchingType.INFLIGHT,
        max_batch_size: int | None = None,
        max_num_tokens: int | None = None,
        parallel_config: Any = None,
        peft_cache_config: Any = None,
        logits_post_processor_config: Any = None,
        decoding_config: Any = None,
        use_gpu_direct_storage: bool = False,
        gpu_weights_percent: float = 1.0,
        max_queue_size: int | None = None,
        extended_runtime_perf_knob_config: Any = None,
        debug_config: Any = None,
        recv_poll_period_ms: int = 0,
        max_seq_idle_microseconds: int = 180_000_000,
        spec_dec_config: Any = None,
        guided_decoding_config: Any = None,
        additional_model_outputs: Any = None,
        cache_transceiver_config: Any = None,
        gather_generation_logits: bool = False,
        mm_embedding_offloading: bool = False,
        enable_trt_overlap: bool = False,
    ) -> None:
        self.max_beam_width = max_beam_width
        self.scheduler_config = scheduler_config or SchedulerConfig()
        self.kv_cache_config = kv_cache_config or KvCacheConfig()
        self.enable_chunked_context = enable_chunked_context
        self.normalize_log_probs = normalize_log_probs
        self.iter_stats_max_iterations = iter_stats_max_iterations
        self.request_stats_max_iterations = request_stats_max_iterations
        self.batching_type = batching_type
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.parallel_config = parallel_config
        self.peft_cache_config = peft_cache_config
        self.logits_post_processor_config = logits_post_processor_config
        self.decoding_config = decoding_config
        self.use_gpu_direct_storage = use_gpu_direct_storage
        self.gpu_weights_percent = gpu_weights_percent
        self.max_queue_size = max_queue_size
        self.extended_runtime_perf_knob_config = extended_runtime_perf_knob_config
        self.debug_config = debug_config
        self.recv_poll_period_ms = recv_poll_period_ms
        self.max_seq_idle_microseconds = max_seq_idle_microseconds
        self.spec_dec_config = spec_dec_config
        self.guided_decoding_config = guided_decoding_config
        self.additional_model_outputs = additional_model_outputs
        self.cache_transceiver_config = cache_transceiver_config
        self.gather_generation_logits = gather_generation_logits
        self.mm_embedding_offloading = mm_embedding_offloading
        self.enable_trt_overlap = enable_trt_overlap


# ---------------------------------------------------------------------------------------------
# Requests (request.cpp; checks from samplingConfig.cpp, L33-62 and L275-409 at da939094)


class SamplingConfig:
    # nanobind's def_prop_rw makes every field a class attribute, so `dir(SamplingConfig)`
    # lists them: the LLM API (sampling_params.py, _get_sampling_config) and the adapter rely
    # on that to see which fields a binding has.
    beam_width: Any = None
    top_k: Any = None
    top_p: Any = None
    top_p_min: Any = None
    top_p_reset_ids: Any = None
    top_p_decay: Any = None
    seed: Any = None
    temperature: Any = None
    min_tokens: Any = None
    beam_search_diversity_rate: Any = None
    repetition_penalty: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    prompt_ignore_length: Any = None
    length_penalty: Any = None
    early_stopping: Any = None
    no_repeat_ngram_size: Any = None
    num_return_sequences: Any = None
    min_p: Any = None
    beam_width_array: Any = None

    def __init__(
        self,
        beam_width: int = 1,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        top_p_min: float | None = None,
        top_p_reset_ids: int | None = None,
        top_p_decay: float | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        min_tokens: int | None = None,
        beam_search_diversity_rate: float | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        prompt_ignore_length: int | None = None,
        length_penalty: float | None = None,
        early_stopping: int | None = None,
        no_repeat_ngram_size: int | None = None,
        num_return_sequences: int | None = None,
        min_p: float | None = None,
        beam_width_array: list[int] | None = None,
    ) -> None:
        # samplingConfig.cpp at da939094 (the only stored version; it predates PR #8127, so
        # promptIgnoreLength's check is unread): checkBeamWidth L275-279 (also <= kMaxBeamWidth),
        # checkTopK L281-288, checkTopP L290-298, checkTemperature L329-336, checkMinTokens
        # L338-345, checkRepetitionPenalty L356-363 (a bare TLLM_CHECK there; the message below
        # is an older version's), checkNumReturnSequences L392-400, checkMinP L402-409. The
        # seed's range is the binding's uint64.
        _check(beam_width > 0, "beamWidth > 0")
        _check(top_k is None or top_k >= 0, "topK >= 0")
        _check(top_p is None or 0.0 < top_p <= 1.0, "topP in (0, 1]")
        _check(temperature is None or temperature >= 0.0, "temperature >= 0")
        _check(min_tokens is None or min_tokens >= 0, "minTokens >= 0")
        _check(
            repetition_penalty is None or repetition_penalty > 0.0,
            "Repetition penalty should be strictly greater than zero.",
        )
        _check(min_p is None or 0.0 <= min_p <= 1.0, "minP in [0, 1]")
        _check(seed is None or 0 <= seed < 2**64, "seed is a uint64")
        _check(prompt_ignore_length is None or prompt_ignore_length >= 0, "promptIgnoreLength")
        if num_return_sequences is not None:
            _check(num_return_sequences > 0, "numReturnSequences > 0")
            _check(beam_width == 1 or num_return_sequences <= beam_width, "numReturnSequences")
        self.beam_width = beam_width
        self.top_k = top_k
        self.top_p = top_p
        self.top_p_min = top_p_min
        self.top_p_reset_ids = top_p_reset_ids
        self.top_p_decay = top_p_decay
        self.seed = seed
        self.temperature = temperature
        self.min_tokens = min_tokens
        self.beam_search_diversity_rate = beam_search_diversity_rate
        self.repetition_penalty = repetition_penalty
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.prompt_ignore_length = prompt_ignore_length
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.num_return_sequences = num_return_sequences
        self.min_p = min_p
        self.beam_width_array = beam_width_array


class OutputConfig:
    def __init__(
        self,
        return_log_probs: bool = False,
        return_context_logits: bool = False,
        return_generation_logits: bool = False,
        exclude_input_from_output: bool = False,
        return_encoder_output: bool = False,
        return_perf_metrics: bool = False,
        additional_model_outputs: Any = None,
    ) -> None:
        self.return_log_probs = return_log_probs
        self.return_context_logits = return_context_logits
        self.return_generation_logits = return_generation_logits
        self.exclude_input_from_output = exclude_input_from_output
        self.return_encoder_output = return_encoder_output
        self.return_perf_metrics = return_perf_metrics
        self.additional_model_outputs = additional_model_outputs


class Request:
    BATCHED_POST_PROCESSOR_NAME = "batched"

    def __init__(
        self,
        input_token_ids: list[int],
        max_tokens: int,
        *,
        streaming: bool = False,
        sampling_config: SamplingConfig | None = None,
        output_config: OutputConfig | None = None,
        end_id: int | None = None,
        pad_id: int | None = None,
        position_ids: list[int] | None = None,
        bad_words: list[list[int]] | None = None,
        stop_words: list[list[int]] | None = None,
        embedding_bias: Any = None,
        external_draft_tokens_config: Any = None,
        prompt_tuning_config: Any = None,
        multimodal_input: Any = None,
        multimodal_embedding: Any = None,
        mrope_config: Any = None,
        lora_config: Any = None,
        lookahead_config: Any = None,
        kv_cache_retention_config: Any = None,
        logits_post_processor_name: str | None = None,
        logits_post_processor: Any = None,
        encoder_input_token_ids: list[int] | None = None,
        client_id: int | None = None,
        return_all_generated_tokens: bool = False,
        priority: float = 0.5,
        type: RequestType = RequestType.REQUEST_TYPE_CONTEXT_AND_GENERATION,
        context_phase_params: Any = None,
        encoder_input_features: Any = None,
        encoder_output_length: int | None = None,
        cross_attention_mask: Any = None,
        num_return_sequences: int = 1,
        eagle_config: Any = None,
        skip_cross_attn_blocks: Any = None,
        guided_decoding_params: Any = None,
        language_adapter_uid: int | None = None,
        allotted_time_ms: timedelta | None = None,
    ) -> None:
        # nanobind rejects wrong element types at the call; mirror the ones the adapter sets.
        if not all(isinstance(t, int) for t in input_token_ids):
            raise TypeError("input_token_ids must be a list of int")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise TypeError("max_tokens must be an int")
        if allotted_time_ms is not None and not isinstance(allotted_time_ms, timedelta):
            raise TypeError("allotted_time_ms must be a datetime.timedelta")
        for words in (bad_words, stop_words):
            if words is not None and not all(
                isinstance(w, list) and all(isinstance(t, int) for t in w) for w in words
            ):
                raise TypeError("stop_words / bad_words must be list[list[int]]")
        # requestImpl.h validate() L485-508 (checks L487-488), run by the constructor L90, at
        # a678b91a (TLLM_CHECKs: raised at the call, no stage prefix).
        _check(
            len(input_token_ids) > 0,
            _what("!mInputTokenIds.empty()", "executor/requestImpl.h", check=True, stage=""),
        )
        _check(
            max_tokens > 0,
            _what("mMaxNewTokens > 0", "executor/requestImpl.h", check=True, stage=""),
        )
        # requestImpl.h checkEmbeddingBias L510-517 (check L514) at a678b91a.
        if embedding_bias is not None:
            _check(
                len(tuple(embedding_bias.shape)) == 1,
                _what(
                    "bias.value().getShape().size() == 1",
                    "executor/requestImpl.h",
                    check=True,
                    stage="",
                ),
            )
        self._input_token_ids = list(input_token_ids)
        self._max_tokens = max_tokens
        self.streaming = streaming
        self.sampling_config = sampling_config or SamplingConfig()
        self.output_config = output_config or OutputConfig()
        self.end_id = end_id
        self.pad_id = pad_id
        self.position_ids = position_ids
        self.bad_words = bad_words
        self.stop_words = stop_words
        self.embedding_bias = embedding_bias
        self.client_id = client_id
        self.return_all_generated_tokens = return_all_generated_tokens
        self.priority = priority
        self.request_type = type
        self.guided_decoding_params = guided_decoding_params
        self.allotted_time_ms = allotted_time_ms
        self.lora_config = lora_config
        self.kv_cache_retention_config = kv_cache_retention_config

    @property
    def input_token_ids(self) -> list[int]:
        return list(self._input_token_ids)

    @property
    def max_tokens(self) -> int:
        return self._max_tokens


# ---------------------------------------------------------------------------------------------
# Responses


class KvCacheMetrics:
    def __init__(self) -> None:
        self.num_total_allocated_blocks = 0
        self.num_new_allocated_blocks = 0
        self.num_reused_blocks = 0
        self.num_missed_blocks = 0
        self.kv_cache_hit_rate = 0.0


class TimingMetrics:
    """steady_clock time points, which the bindings return as timedelta since the clock's
    epoch (CLOCK_MONOTONIC: time.monotonic()); unset ones are the epoch, timedelta(0)
    (cpp/include/tensorrt_llm/executor/types.h RequestPerfMetrics::TimingMetrics, L439-455 at
    a98a9061, bound in cpp/tensorrt_llm/nanobind/executor/request.cpp, commit 008b2b8d;
    L762-772 at ac456dca)."""

    def __init__(self) -> None:
        self.arrival_time = timedelta(0)
        self.first_scheduled_time = timedelta(0)
        self.first_token_time = timedelta(0)
        self.last_token_time = timedelta(0)
        self.kv_cache_transfer_start = timedelta(0)
        self.kv_cache_transfer_end = timedelta(0)
        self.kv_cache_size = 0


class RequestPerfMetrics:
    def __init__(self) -> None:
        self.timing_metrics = TimingMetrics()
        self.kv_cache_metrics = KvCacheMetrics()
        self.first_iter: int | None = None
        self.last_iter: int | None = None
        self.iter: int | None = None


class Result:
    def __init__(self) -> None:
        self.is_final = False
        self.output_token_ids: list[list[int]] = []
        self.cum_log_probs: list[float] | None = None
        self.log_probs: list[list[float]] | None = None
        self.context_logits: Any = None
        self.generation_logits: Any = None
        self.spec_dec_fast_logits_info: Any = None
        self.encoder_output: Any = None
        self.finish_reasons: list[FinishReason] = []
        self.sequence_index = 0
        self.is_sequence_final = False
        self.decoding_iter = 0
        self.avg_decoded_tokens_per_iter = 0.0
        self.context_phase_params: Any = None
        self.request_perf_metrics: RequestPerfMetrics | None = None
        self.additional_outputs: list[Any] = []


class Response:
    def __init__(
        self, request_id: int, result_or_error: Result | str, client_id: int | None = None
    ) -> None:
        self._request_id = request_id
        self._client_id = client_id
        self._error = result_or_error if isinstance(result_or_error, str) else None
        self._result = result_or_error if isinstance(result_or_error, Result) else None

    @property
    def request_id(self) -> int:
        return self._request_id

    @property
    def client_id(self) -> int | None:
        return self._client_id

    def has_error(self) -> bool:
        return self._error is not None

    @property
    def error_msg(self) -> str:
        _check(self._error is not None, "Cannot get the error message of a response without error")
        assert self._error is not None
        return self._error

    @property
    def result(self) -> Result:
        _check(self._result is not None, "Cannot get the result for a response with an error")
        assert self._result is not None
        return self._result


# ---------------------------------------------------------------------------------------------
# Statistics (bindings.cpp)


class KvCacheStats:
    def __init__(self) -> None:
        self.max_num_blocks = 0
        self.free_num_blocks = 0
        self.used_num_blocks = 0
        self.tokens_per_block = 0
        self.alloc_total_blocks = 0
        self.alloc_new_blocks = 0
        self.reused_blocks = 0
        self.missed_blocks = 0
        self.cache_hit_rate = 0.0


class InflightBatchingStats:
    def __init__(self) -> None:
        self.num_scheduled_requests = 0
        self.num_context_requests = 0
        self.num_gen_requests = 0
        self.num_paused_requests = 0
        self.num_ctx_tokens = 0
        self.micro_batch_id = 0
        self.avg_num_decoded_tokens_per_iter = 0.0


class IterationStats:
    def __init__(self) -> None:
        self.timestamp = ""
        self.iter = 0
        self.iter_latency_ms = 0.0
        self.new_active_requests_queue_latency_ms = 0.0
        self.num_new_active_requests = 0
        self.num_active_requests = 0
        self.num_queued_requests = 0
        self.num_completed_requests = 0
        self.max_num_active_requests = 0
        self.gpu_mem_usage = 0
        self.cpu_mem_usage = 0
        self.pinned_mem_usage = 0
        self.kv_cache_stats: KvCacheStats | None = None
        self.cross_kv_cache_stats: KvCacheStats | None = None
        self.static_batching_stats: Any = None
        self.inflight_batching_stats: InflightBatchingStats | None = None
        self.specdec_stats: Any = None


# ---------------------------------------------------------------------------------------------
# The executor


@dataclass
class _Sequence:
    index: int
    seed: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sent: int = 0  # tokens already streamed
    finish: FinishReason = FinishReason.NOT_FINISHED
    matcher: Any = None  # the sequence's xgrammar GrammarMatcher when guided


@dataclass
class _Active:
    request_id: int
    request: Request
    arrival: float
    max_new: int
    sequences: list[_Sequence]
    reused_blocks: int = 0
    missed_blocks: int = 0
    validated: bool = False
    scheduled: bool = False
    scheduled_at: float = 0.0  # time.monotonic() when first scheduled
    cancelled: bool = False


class Executor:
    def __init__(
        self, model_path: str | Path, model_type: ModelType, executor_config: ExecutorConfig
    ) -> None:
        engine_dir = Path(model_path)
        config = json.loads((engine_dir / "config.json").read_text())
        _check((engine_dir / "rank0.engine").is_file(), f"no rank0.engine in {engine_dir}")
        _check(model_type == ModelType.DECODER_ONLY, "the fake serves decoder-only models")
        build = config["build_config"]
        self.fake_model_path = engine_dir
        self.fake_config = executor_config
        self.fake_requests: list[Request] = []
        plugins = build.get("plugin_config") or {}
        self._vocab = int(config["pretrained_config"]["vocab_size"])
        self._logits_dtype = str(config["pretrained_config"].get("logits_dtype", "float32"))
        self._max_seq_len = int(build["max_seq_len"])
        # executorImpl.cpp fixExecutorConfig (L68-86 at b35ac1b6): no chunked context without
        # paged context FMHA.
        self.fake_chunked_context = executor_config.enable_chunked_context and bool(
            plugins.get("use_paged_context_fmha", True)
        )
        self.fake_max_input_len = self._executor_max_input_len(
            build, plugins, executor_config, chunked=self.fake_chunked_context
        )
        # The runtime may lower the engine's batch size; a larger one is refused
        # (trtGptModel.h, TrtGptModel constructor L67-69 at c8c6df08).
        engine_batch = int(build["max_batch_size"])
        self._max_batch = executor_config.max_batch_size or engine_batch
        _check(
            self._max_batch <= engine_batch,
            f"Runtime configured max batch size ({self._max_batch}) must not exceed engine max "
            f"batch size ({engine_batch})",
        )
        self._tokens_per_block = int(build.get("plugin_config", {}).get("tokens_per_block", 32))
        guided = executor_config.guided_decoding_config
        self._guided = FakeGuidedDecoder(guided, self._vocab) if guided is not None else None
        kv = executor_config.kv_cache_config
        capacity = kv.max_tokens or int(
            FAKE_KV_CAPACITY_TOKENS * (kv.free_gpu_memory_fraction or 0.9)
        )
        self._max_blocks = max(1, capacity // self._tokens_per_block)
        # trtGptModelInflightBatching.cpp fixExecutorConfig (L141-168 at b35ac1b6): no block
        # reuse without paged context FMHA, nor for an engine that gathers context logits.
        self._reuse = (
            kv.enable_block_reuse
            and bool(plugins.get("use_paged_context_fmha", True))
            and not bool(build.get("gather_context_logits", False))
        )
        self._known_blocks: set[tuple[int, ...]] = set()
        self._reused_total = 0
        self._missed_total = 0
        self._lock = threading.Condition()
        self._responses: list[Response] = []
        self._responses_cv = threading.Condition()
        self._queue: deque[_Active] = deque()
        self._active: list[_Active] = []
        self._cancel: set[int] = set()
        self._terminated: set[int] = set()
        self._stats: deque[IterationStats] = deque(
            maxlen=max(1, executor_config.iter_stats_max_iterations)
        )
        self._next_id = 1
        self._iter = 0
        self._shutdown_called = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="fake-trtllm-executor", daemon=True)
        self._thread.start()
        fake_instances.append(self)

    def _executor_max_input_len(
        self,
        build: dict[str, Any],
        plugins: dict[str, Any],
        executor_config: ExecutorConfig,
        *,
        chunked: bool,
    ) -> int:
        """trtGptModel.h, TrtGptModel constructor: the longest prompt validate() accepts."""
        max_seq_len = int(build["max_seq_len"])
        max_num_tokens = int(build["max_num_tokens"])
        wanted = executor_config.max_num_tokens
        if wanted is not None and wanted <= max_num_tokens:  # a larger one is ignored
            max_num_tokens = wanted
        if chunked:
            return max_seq_len - 1
        if plugins.get("context_fmha", True) and plugins.get("remove_input_padding", True):
            return min(max_seq_len - 1, max_num_tokens)
        return int(build["max_input_len"])

    # -- public API ------------------------------------------------------------------------

    def enqueue_request(self, request: Request) -> int:
        return self.enqueue_requests([request])[0]

    def enqueue_requests(self, requests: list[Request]) -> list[int]:
        _check(not self._shutdown_called, "Shutdown called, cannot enqueue requests")
        ids = []
        with self._lock:
            max_queue = self.fake_config.max_queue_size
            if max_queue and len(self._queue) + len(requests) > max_queue:
                raise RuntimeError(
                    f"Maximum queue size of {max_queue} has been reached, please try again later"
                )
            for request in requests:
                request_id = self._next_id
                self._next_id += 1
                self.fake_requests.append(request)
                self._queue.append(self._admit(request_id, request))
                ids.append(request_id)
            self._lock.notify_all()
        return ids

    def await_responses(
        self,
        timeout: timedelta | None = None,
    ) -> list[Response]:
        # The real method has two more overloads (by id / ids); the adapter uses this one.
        _check(not self._shutdown_called, "Shutdown called")
        if timeout is not None and not isinstance(timeout, timedelta):
            raise TypeError("timeout must be a datetime.timedelta")
        with self._responses_cv:
            if not self._responses:
                self._responses_cv.wait(None if timeout is None else timeout.total_seconds())
            ready, self._responses = self._responses, []
        return ready

    def get_num_responses_ready(self, id: int | None = None) -> int:
        _check(not self._shutdown_called, "Shutdown called")
        with self._responses_cv:
            return sum(1 for r in self._responses if id is None or r.request_id == id)

    def cancel_request(self, id: int) -> None:
        _check(not self._shutdown_called, "Shutdown called")
        with self._lock:
            if id not in self._terminated:
                self._cancel.add(id)
                self._lock.notify_all()

    def get_latest_iteration_stats(self) -> list[IterationStats]:
        _check(not self._shutdown_called, "Shutdown called")
        with self._lock:
            stats, self._stats = list(self._stats), deque(maxlen=self._stats.maxlen)
        return stats

    def fake_unfinished_request_ids(self) -> set[int]:
        """Requests queued or running (fake only: the real API has no such query)."""
        with self._lock:
            return {a.request_id for a in (*self._queue, *self._active)}

    def can_enqueue_requests(self) -> bool:
        return not self._shutdown_called

    def shutdown(self) -> None:
        if self._shutdown_called:
            return
        self._shutdown_called = True
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- the execution loop ----------------------------------------------------------------

    def _admit(self, request_id: int, request: Request) -> _Active:
        sampling = request.sampling_config
        n = sampling.num_return_sequences or 1
        greedy = sampling.top_k == 1
        base_seed = 0 if greedy or sampling.seed is None else sampling.seed
        sequences = [_Sequence(index=i, seed=base_seed + (0 if greedy else i)) for i in range(n)]
        prompt_len = len(request.input_token_ids)
        max_new = min(request.max_tokens, self._max_seq_len - prompt_len)
        return _Active(request_id, request, time.monotonic(), max_new, sequences)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._queue and not self._active:
                    self._lock.wait()
                if self._stop:
                    return
            self._iteration()
            time.sleep(FAKE_STEP_INTERVAL_S)

    def _validate(self, active: _Active) -> str | None:
        request = active.request
        prompt_len = len(request.input_token_ids)
        # llmRequest.cpp LlmRequest::validate (L243-314 at 119c6e60), called from
        # executorImpl.cpp fetchNewRequests.
        if request.end_id is not None and not -1 <= request.end_id < self._vocab:
            return _what(
                f"EndId ({request.end_id}) is not within acceptable range [-1, {self._vocab}).",
                "batch_manager/llmRequest.cpp",
                check=True,
            )
        if prompt_len > self.fake_max_input_len:
            return _what(
                f"Prompt length ({prompt_len}) exceeds maximum input length "
                f"({self.fake_max_input_len}). Set log level to info and check TRTGptModel logs "
                "for how maximum input length is set",
                "batch_manager/llmRequest.cpp",
            )
        # executorImpl.cpp fetchNewRequests (b35ac1b6) checks mPromptLen + mMaxNewTokens - 1
        # (L1555-1563) after validate() (L1541-1544) has clipped mMaxNewTokens to
        # maxSequenceLen - mPromptLen: active.max_new.
        policy = self.fake_config.scheduler_config.capacity_scheduler_policy
        if (
            request.streaming
            and policy != CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
            and not self.fake_chunked_context
            and prompt_len + active.max_new - 1 > self.fake_max_input_len
        ):
            return _what(
                "Request sequence length is potentially greater than max input length. This "
                "cannot be run unless streaming is disabled, context chunking is enabled or the "
                "GUARANTEED_NO_EVICT scheduling policy is used",
                "executor/executorImpl.cpp",
                check=True,
            )
        output = request.output_config
        if output.return_generation_logits and not self.fake_config.gather_generation_logits:
            return _what(
                "To return generation logits, gather_generation_logits must be enabled in "
                "ExecutorConfig",
                "executor/executorImpl.cpp",
                check=True,
            )
        bias = request.embedding_bias
        if bias is not None:
            dtype = str(bias.dtype).removeprefix("torch.")
            if dtype != self._logits_dtype and (dtype, self._logits_dtype) != (
                "float32",
                "float16",
            ):
                # Thrown in the decoder setup, so forwardAsync's catch reports it.
                return _what(
                    "Embedding bias data type must be same as model logits type.",
                    "batch_manager/createNewDecoderRequests.cpp",
                    stage=_FORWARD_PREFIX,
                )
        return self._start_guides(active)

    def _start_guides(self, active: _Active) -> str | None:
        """Each sequence's matcher, compiled from the request's guide (guidedDecoder.cpp at
        2a9abd95 builds them at the first context chunk, build L91-133; AcceptToken after,
        L134-139); an error message if that fails."""
        params = active.request.guided_decoding_params
        if params is None:
            return None
        if self._guided is None:  # executorImpl.cpp fetchNewRequests L1619-1624 at b35ac1b6
            return _what(
                "Request is specified with GuidedDecodingParams, but GuidedDecoder is not setup. "
                "Please provide a valid GuidedDecodingConfig to setup GuidedDecoder.",
                "executor/executorImpl.cpp",
                check=True,
            )
        try:
            for seq in active.sequences:
                seq.matcher = self._guided.matcher(params)
        except RuntimeError as error:
            # Not read: which catch reports a compile error in GuidedDecoder::build (the
            # service compiles every grammar first, so a valid request never meets one).
            return _FETCH_PREFIX + str(error)
        return None

    def _iteration(self) -> None:
        started = time.monotonic()
        out: list[Response] = []
        with self._lock:
            self._iter += 1
            cancel, self._cancel = self._cancel, set()
            new_active = 0
            # Requests are validated when the loop fetches them, as the real executor does.
            for active in list(self._queue):
                if not active.validated:
                    error = self._validate(active)
                    active.validated = True
                    if error is not None:
                        self._queue.remove(active)
                        self._terminated.add(active.request_id)
                        out.append(Response(active.request_id, error, active.request.client_id))
            running = sum(len(a.sequences) for a in self._active)
            while self._queue and running + len(self._queue[0].sequences) <= self._max_batch:
                active = self._queue.popleft()
                self._schedule(active)
                self._active.append(active)
                running += len(active.sequences)
                new_active += 1
            for active in self._queue:
                if active.request_id in cancel:
                    active.cancelled = True
            completed = 0
            for active in list(self._active):
                if active.request_id in cancel:
                    active.cancelled = True
                out.extend(self._step(active))
                if all(s.finish != FinishReason.NOT_FINISHED for s in active.sequences):
                    self._active.remove(active)
                    self._terminated.add(active.request_id)
                    completed += 1
            # A request cancelled while still queued ends without generating anything.
            for active in [a for a in self._queue if a.cancelled]:
                self._queue.remove(active)
                self._terminated.add(active.request_id)
                for seq in active.sequences:
                    seq.finish = FinishReason.CANCELLED
                    out.append(self._result(active, seq, final=True))
            self._stats.append(self._iteration_stats(started, new_active, completed))
        if out:
            with self._responses_cv:
                self._responses.extend(out)
                self._responses_cv.notify_all()

    def _schedule(self, active: _Active) -> None:
        prompt = active.request.input_token_ids
        tpb = self._tokens_per_block
        full_blocks = [tuple(prompt[: (i + 1) * tpb]) for i in range(len(prompt) // tpb)]
        # At least one prompt token is always recomputed, so the last full block of a prompt
        # that is an exact multiple of the block size is never reused.
        reusable = (len(prompt) - 1) // tpb
        reused = 0
        if self._reuse:
            for block in full_blocks[:reusable]:
                if block not in self._known_blocks:
                    break
                reused += 1
            self._known_blocks.update(full_blocks)
        active.reused_blocks = reused
        active.missed_blocks = math.ceil(len(prompt) / tpb) - reused
        self._reused_total += reused
        self._missed_total += active.missed_blocks
        active.scheduled = True
        active.scheduled_at = time.monotonic()

    def _pick(self, active: _Active, seq: _Sequence) -> int:
        request = active.request
        step = len(seq.tokens)
        token = fake_token(request.input_token_ids, seq.seed, step, self._vocab)
        banned: set[int] = set()
        forced: list[int] = []
        bias = request.embedding_bias
        if bias is not None:
            values = bias.tolist()
            forced = [i for i, v in enumerate(values) if v >= 100.0]
            banned = {i for i, v in enumerate(values) if v <= -100.0}
        min_tokens = request.sampling_config.min_tokens
        if min_tokens is None:
            min_tokens = 1  # the C++ default
        if request.end_id is not None and request.end_id >= 0 and step < min_tokens:
            banned.add(request.end_id)
        if seq.matcher is not None:
            return self._pick_guided(seq, token, forced, banned)
        if forced:
            return forced[0]
        while token in banned:
            token = (token + 1) % self._vocab
        return token

    def _pick_guided(self, seq: _Sequence, token: int, forced: list[int], banned: set[int]) -> int:
        """The bitmask masks the logits after the bias (guidedDecoder.cpp@2a9abd95
        execute, L159 on): the first
        allowed token from the proposed one on, a forced one only if the grammar allows it."""
        assert self._guided is not None
        allowed = self._guided.allowed(seq.matcher)
        choice = next((t for t in forced if allowed[t]), None)
        if choice is None:
            unbanned = allowed.clone()
            unbanned[list(banned)] = False
            ids = (unbanned if unbanned.any() else allowed).nonzero().flatten().tolist()
            choice = next((t for t in ids if t >= token), ids[0])
        seq.matcher.accept_token(choice)
        return choice

    def _processed_logits(self, active: _Active, seq: _Sequence, token: int) -> dict[int, float]:
        """penaltyKernels.cu batchApplyPenalty@249d93d5: bias L159-163, 1/temperature L164-168
        (both set L73-78), penalties L169-190, min length L198-206.

        Sparse: the logits of every id not in the result are 0.0 (as in
        `fake_generation_logits`), which keeps a 150k vocabulary cheap.
        """
        request = active.request
        sampling = request.sampling_config
        dense = fake_generation_logits(token, self._vocab)
        logits = {
            i: dense[i] for i in (token, (token + 1) % self._vocab, (token + 2) % self._vocab)
        }
        if request.embedding_bias is not None:
            for i in request.embedding_bias.nonzero().flatten().tolist():
                logits[i] = logits.get(i, 0.0) + float(request.embedding_bias[i])
        temperature = sampling.temperature
        if temperature is not None and abs(temperature - 1.0) > 1e-9:
            logits = {i: x * (1.0 / (temperature + 1e-6)) for i, x in logits.items()}
        history = [*request.input_token_ids, *seq.tokens]
        # PR #8127: presence/frequency skip the first prompt_ignore_length tokens; repetition
        # looks at the whole sequence.
        counted = Counter(history[sampling.prompt_ignore_length or 0 :])
        for index in set(history):
            value = logits.get(index, 0.0)
            if sampling.repetition_penalty is not None:
                penalty = sampling.repetition_penalty
                value = value * penalty if value < 0.0 else value / penalty
            if counted[index] > 0:
                value -= sampling.presence_penalty or 0.0
                value -= (sampling.frequency_penalty or 0.0) * counted[index]
            logits[index] = value
        # Unset is DefaultDecodingParams::getMinLength() = 1 (layers/defaultDecodingParams.h
        # L53-56 at 66ef1df4); end_id is masked while fewer are generated (penaltyKernels.cu
        # L198-206 at 249d93d5).
        min_tokens = 1 if sampling.min_tokens is None else sampling.min_tokens
        end_id = request.end_id
        if end_id is not None and end_id >= 0 and len(seq.tokens) < min_tokens:
            logits[end_id] = -math.inf
        return logits

    def _logprob(self, active: _Active, seq: _Sequence, token: int) -> float:
        """samplingTopKKernels.cu topKStage2Sampling (L240-253 at 03961722): log p over the whole
        vocabulary, or renormalised over the set the token was drawn from when
        normalize_log_probs is on."""
        logits = self._processed_logits(active, seq, token)
        zeros = self._vocab - len(logits)  # ids whose processed logit is 0.0
        top = max([*logits.values(), 0.0] if zeros else logits.values())
        log_norm = top + math.log(
            sum(math.exp(x - top) for x in logits.values()) + zeros * math.exp(-top)
        )
        logprob = logits.get(token, 0.0) - log_norm
        if not self.fake_config.normalize_log_probs:
            return logprob
        sampling = active.request.sampling_config
        ranked = sorted([*logits.values(), *[0.0] * zeros], reverse=True)
        if sampling.top_k:
            kept = ranked[: sampling.top_k]
        elif sampling.top_p:
            kept, mass = [], 0.0
            for value in ranked:  # the nucleus: the smallest prefix with mass >= top_p
                kept.append(value)
                mass += math.exp(value - log_norm)
                if mass >= sampling.top_p:
                    break
        else:
            kept = ranked
        mass = sum(math.exp(value - log_norm) for value in kept)
        if logits.get(token, 0.0) < kept[-1]:  # forced past the set (the fake's bias shortcut)
            mass += math.exp(logprob)
        return logprob - math.log(mass)

    def _step(self, active: _Active) -> list[Response]:
        request = active.request
        out = []
        timed_out = (
            request.allotted_time_ms is not None
            and time.monotonic() - active.arrival > request.allotted_time_ms.total_seconds()
        )
        for seq in active.sequences:
            if seq.finish != FinishReason.NOT_FINISHED:
                continue
            if active.cancelled or timed_out:
                seq.finish = FinishReason.CANCELLED if active.cancelled else FinishReason.TIMED_OUT
                out.append(self._result(active, seq, final=True))
                continue
            if active.max_new <= 0:
                seq.finish = FinishReason.LENGTH
                out.append(self._result(active, seq, final=True))
                continue
            token = self._pick(active, seq)
            if request.end_id is not None and request.end_id >= 0 and token == request.end_id:
                seq.finish = FinishReason.END_ID  # the end token is not part of the output
            else:
                if request.output_config.return_log_probs:
                    seq.logprobs.append(self._logprob(active, seq, token))
                seq.tokens.append(token)
                if any(
                    word and seq.tokens[-len(word) :] == word for word in request.stop_words or []
                ):
                    seq.finish = FinishReason.STOP_WORDS
                elif len(seq.tokens) >= active.max_new:
                    seq.finish = FinishReason.LENGTH
            final = seq.finish != FinishReason.NOT_FINISHED
            if final or request.streaming:
                out.append(self._result(active, seq, final=final))
        return out

    def _result(self, active: _Active, seq: _Sequence, *, final: bool) -> Response:
        request = active.request
        result = Result()
        result.sequence_index = seq.index
        result.is_sequence_final = final
        result.is_final = final and all(
            s.finish != FinishReason.NOT_FINISHED for s in active.sequences
        )
        if request.streaming and not request.return_all_generated_tokens:
            new = seq.tokens[seq.sent :]
        elif request.streaming or request.output_config.exclude_input_from_output:
            new = list(seq.tokens)
        else:
            new = request.input_token_ids + seq.tokens
        first_new = len(seq.tokens) - len(new) if request.streaming else 0
        seq.sent = len(seq.tokens)
        result.output_token_ids = [new]
        result.finish_reasons = [seq.finish]
        result.decoding_iter = len(seq.tokens)
        output = request.output_config
        if output.return_log_probs:
            # Every log prob so far, even when streaming only sends the new tokens.
            result.log_probs = [list(seq.logprobs)]
            result.cum_log_probs = [sum(seq.logprobs)]
        if output.return_generation_logits:
            import torch

            steps = seq.tokens[first_new:] if request.streaming else seq.tokens
            rows = [fake_generation_logits(t, self._vocab) for t in steps]
            logits = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), self._vocab)
            # Streaming: [new_tokens, beam, vocab]; otherwise [beam, tokens, vocab].
            result.generation_logits = (
                logits.unsqueeze(1) if request.streaming else logits.unsqueeze(0)
            )
        if output.return_perf_metrics:
            metrics = RequestPerfMetrics()
            metrics.timing_metrics.arrival_time = timedelta(seconds=active.arrival)
            metrics.timing_metrics.first_scheduled_time = timedelta(seconds=active.scheduled_at)
            metrics.kv_cache_metrics.num_reused_blocks = active.reused_blocks
            metrics.kv_cache_metrics.num_missed_blocks = active.missed_blocks
            total = active.reused_blocks + active.missed_blocks
            metrics.kv_cache_metrics.kv_cache_hit_rate = (
                active.reused_blocks / total if total else 0.0
            )
            result.request_perf_metrics = metrics
        return Response(active.request_id, result, request.client_id)

    def _iteration_stats(self, started: float, new_active: int, completed: int) -> IterationStats:
        stats = IterationStats()
        stats.timestamp = time.strftime("%m-%d-%Y %H:%M:%S")
        stats.iter = self._iter
        stats.iter_latency_ms = (time.monotonic() - started) * 1000.0
        stats.num_new_active_requests = new_active
        # Children of n > 1 requests are separate LlmRequests in the real batch.
        stats.num_active_requests = sum(len(a.sequences) for a in self._active)
        stats.num_queued_requests = sum(len(a.sequences) for a in self._queue)
        stats.num_completed_requests = completed
        stats.max_num_active_requests = self._max_batch
        kv = KvCacheStats()
        kv.tokens_per_block = self._tokens_per_block
        kv.max_num_blocks = self._max_blocks
        used = sum(
            math.ceil((len(a.request.input_token_ids) + len(s.tokens)) / self._tokens_per_block)
            for a in self._active
            for s in a.sequences
        )
        kv.used_num_blocks = min(used, self._max_blocks)
        kv.free_num_blocks = self._max_blocks - kv.used_num_blocks
        kv.reused_blocks = self._reused_total
        kv.missed_blocks = self._missed_total
        seen = self._reused_total + self._missed_total
        kv.cache_hit_rate = self._reused_total / seen if seen else 0.0
        stats.kv_cache_stats = kv
        ifb = InflightBatchingStats()
        ifb.num_scheduled_requests = stats.num_active_requests
        stats.inflight_batching_stats = ifb
        return stats
