"""Maps a `EngineRequest` onto a `tensorrt_llm.bindings.executor.Request`, field by field.

Facts behind the choices (TensorRT-LLM 1.2.1, `cpp/include/tensorrt_llm/executor/executor.h`,
`tensorrt_llm/executor/base_worker.py`, `samplingConfig.cpp`, `llmRequest.cpp`):
- The sampler is greedy when both top_k and top_p are unset/0, so sampling always passes top_p
  explicitly (1.0 means the whole distribution) and greedy passes top_k=1.
- `SamplingConfig.seed` (not `random_seed`) seeds choice 0; choice i gets seed + i
  (`LlmRequest::createChildRequest`, llmRequest.cpp L329-342 at 119c6e60), matching
  `SamplingParams.seed_for`. An unset seed is 0
  for every request, so a fresh random one is drawn instead.
- The raw executor never infers `end_id`; `-1` disables it (the LLM API's ignore_eos).
- `min_tokens` only masks `end_id` in the sampler, not stop words; see `deferred_stop_ids`.
- Presence and frequency penalties count the prompt's tokens unless
  `SamplingConfig.prompt_ignore_length` skips them (PR #8127, in 1.2.0 GA per PR #13633;
  `penaltyKernels.cu` batchApplyPenalty; its counting, L101-147 at 249d93d5, is older than
  #8127 and counts the whole prompt). OpenAI and the torch engine count only generated
  tokens, so the whole prompt is skipped; the repetition penalty still sees it, in both engines.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

from inference.engines.base import EngineRequest, EngineRequestError
from inference.engines.trtllm.config import EngineBuildConfig, GenerationDefaults
from inference.engines.trtllm.guided import guided_decoding_params

_UINT64 = 1 << 64


@dataclass(frozen=True, slots=True)
class StopPlan:
    """How a request ends: the executor's end_id and stop words, and what the adapter watches."""

    end_id: int  # -1: never end on a token (ignore_eos, or no eos known)
    pad_id: int
    eos_ids: frozenset[int]  # tokens whose stop means EngineFinish.EOS
    stop_words: list[list[int]]  # single-token stop words handed to the executor
    # Stop ids the adapter applies itself, because the executor would honour them before
    # min_tokens tokens exist (empty unless min_tokens > 0).
    deferred_stop_ids: frozenset[int]


def plan_stops(request: EngineRequest, defaults: GenerationDefaults) -> StopPlan:
    params = request.params
    ordered_eos = [] if params.ignore_eos else defaults.order(request.eos_token_ids)
    end_id = ordered_eos[0] if ordered_eos else -1
    eos_ids = frozenset(ordered_eos)
    # The other eos ids (Qwen's <|endoftext|> next to <|im_end|>) become stop words.
    stop_ids = [*ordered_eos[1:], *sorted(params.stop_token_ids - eos_ids)]
    pad_id = defaults.pad_token_id
    if pad_id is None:
        pad_id = end_id if end_id >= 0 else (defaults.eos_token_ids or (0,))[0]
    if params.min_tokens > 0 and stop_ids:
        return StopPlan(end_id, pad_id, eos_ids, [], frozenset(stop_ids))
    return StopPlan(end_id, pad_id, eos_ids, [[t] for t in stop_ids], frozenset())


def build_request(
    trtllm: ModuleType,
    request: EngineRequest,
    *,
    build: EngineBuildConfig,
    stops: StopPlan,
) -> Any:
    """The executor Request for `request` (always streaming); EngineRequestError if impossible."""
    params = request.params
    return trtllm.Request(
        input_token_ids=list(request.prompt_token_ids),
        max_tokens=params.max_tokens,
        streaming=True,
        sampling_config=_sampling_config(trtllm, request),
        output_config=trtllm.OutputConfig(
            return_log_probs=params.logprobs,
            # Raw logits for the top list (and the chosen token's value, see results.py): a
            # host copy of max_tokens x vocab x 4 bytes, so only requests that ask get it.
            return_generation_logits=params.top_logprobs > 0,
            exclude_input_from_output=True,
            # Per-request KV reuse counts: the source of SequenceOutput.cached_tokens.
            return_perf_metrics=True,
        ),
        end_id=stops.end_id,
        pad_id=stops.pad_id,
        stop_words=stops.stop_words or None,
        embedding_bias=_embedding_bias(params.logit_bias, build.vocab_size),
        allotted_time_ms=_allotted_time(request.deadline),
        guided_decoding_params=guided_decoding_params(trtllm, request.constraint),
    )


def _sampling_config(trtllm: ModuleType, request: EngineRequest) -> Any:
    params = request.params
    # Unset means the C++ default: penalties off, so neutral values stay unset.
    common: dict[str, Any] = {
        "min_tokens": params.min_tokens,
        "repetition_penalty": (
            params.repetition_penalty if params.repetition_penalty != 1.0 else None
        ),
        "presence_penalty": params.presence_penalty or None,
        "frequency_penalty": params.frequency_penalty or None,
        "num_return_sequences": params.n if params.n > 1 else None,
    }
    if (params.presence_penalty or params.frequency_penalty) and _has_prompt_ignore_length(trtllm):
        common["prompt_ignore_length"] = len(request.prompt_token_ids)
    if params.greedy:
        return trtllm.SamplingConfig(1, top_k=1, **common)
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return trtllm.SamplingConfig(
        1,
        temperature=params.temperature,
        top_k=params.top_k or None,
        top_p=params.top_p,
        min_p=params.min_p or None,
        seed=seed % _UINT64,
        **common,
    )


def _has_prompt_ignore_length(trtllm: ModuleType) -> bool:
    # The same test the LLM API uses to map its fields (sampling_params.py,
    # _get_sampling_config: dir(SamplingConfig)); a binding without it counts the prompt.
    return "prompt_ignore_length" in dir(trtllm.SamplingConfig)


def _embedding_bias(logit_bias: dict[int, float], vocab_size: int) -> Any:
    """The bias tensor; the engine's logits type was checked before (BIASABLE_LOGITS_DTYPES)."""
    if not logit_bias:
        return None
    import torch  # only requests with a logit bias pay for it

    bad = sorted(t for t in logit_bias if not 0 <= t < vocab_size)
    if bad:
        raise EngineRequestError(
            f"logit_bias token ids {bad[:5]} are outside the model's vocabulary "
            f"(0..{vocab_size - 1})"
        )
    # Rank 1 (requestImpl.h checkEmbeddingBias L510-517 at a678b91a) and FP32, which the
    # executor takes for FP32 logits and converts for FP16 ones (createNewDecoderRequests.cpp
    # getEmbeddingBias L96-129 at b35ac1b6); its length must be vocab_size
    # (initializeEmbeddingBias L248-250, same commit); trtllm-build writes FP32 logits unless
    # told otherwise.
    bias = torch.zeros(vocab_size, dtype=torch.float32)
    ids = torch.tensor(list(logit_bias.keys()), dtype=torch.long)
    bias[ids] = torch.tensor(list(logit_bias.values()), dtype=torch.float32)
    return bias


def _allotted_time(deadline: float | None) -> timedelta | None:
    if deadline is None:
        return None
    # An expired deadline still goes through the executor so the choice ends TIMED_OUT.
    remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000.0)
    return timedelta(milliseconds=remaining_ms)
