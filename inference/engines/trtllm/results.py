"""Turns the executor's streaming `Result`s of one request into `SequenceOutput`s per choice.

Executor facts this relies on (TensorRT-LLM 1.2.1 `LlmRequest::createResult`, issue #2190;
llmRequest.cpp L70-226 at 119c6e60):
- each streaming Result holds only the new tokens (L113-120), but `log_probs` holds every log
  prob so far (L152-156);
- with n > 1 every sequence answers on its own, tagged with `sequence_index` (L83-89);
- the end_id token is never part of the output, stop-word tokens are; a CANCELLED result may
  carry tokens whose log probs are missing (the LLM API works around the same thing).

Log probs: the executor's (`normalize_log_probs=False`) are log-softmax of the distribution the
token was drawn from before top-k/top-p truncation: after logit bias, temperature and penalties
(penaltyKernels.cu batchApplyPenalty L149-206 at 249d93d5, samplingTopKKernels.cu
topKStage2Sampling L240-253 at 03961722). When
top_logprobs are asked for, the generation logits are the model's raw ones, and the chosen
token's value is taken from them too, so it equals its entry in the top list (and the torch
engine's raw value). docs/gpu.md "What each engine returns" has the whole table.

Conventions towards the servicer: an EOS finish never includes the eos token (whether the
executor stopped on end_id or on an extra eos passed as a stop word), a STOP_TOKEN finish
includes the stop token, and a CANCELLED finish carries no tokens (its reader asked to stop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference.engines.base import (
    EngineFinish,
    EngineRequest,
    SequenceOutput,
    TokenLogprob,
)
from inference.engines.trtllm.requests import StopPlan

# FinishReason members by name: nanobind enum values carry `.name`, and matching names keeps
# this module free of the bindings import.
_FINISH_BY_NAME = {
    "END_ID": EngineFinish.EOS,
    "LENGTH": EngineFinish.LENGTH,
    "TIMED_OUT": EngineFinish.TIME_LIMIT,
    "CANCELLED": EngineFinish.CANCELLED,
}


@dataclass(slots=True)
class ChoiceState:
    index: int
    generated: int = 0  # tokens handed out so far
    logprobs_seen: int = 0  # entries of the executor's cumulative log_probs already used
    last_token: int | None = None
    finished: bool = False


class ResultConverter:
    """Per-request state: which choices are done and how far each one's log probs go."""

    def __init__(
        self,
        request: EngineRequest,
        stops: StopPlan,
        *,
        tokens_per_block: int,
        vocab_size: int,
    ) -> None:
        self._params = request.params
        self._prompt_len = len(request.prompt_token_ids)
        self._stops = stops
        self._tokens_per_block = tokens_per_block
        self._vocab_size = vocab_size
        self.choices = [ChoiceState(i) for i in range(request.params.n)]

    @property
    def all_finished(self) -> bool:
        return all(c.finished for c in self.choices)

    def end_choice(self, index: int) -> SequenceOutput | None:
        """Finish a choice now with CANCELLED (finish_choice, shutdown); None if already done."""
        choice = self.choices[index]
        if choice.finished:
            return None
        choice.finished = True
        return SequenceOutput(index=index, token_ids=[], finish=EngineFinish.CANCELLED)

    def convert(self, result: Any) -> SequenceOutput | None:
        """The output for one Result; None when it brings nothing (or its choice is done)."""
        index = int(result.sequence_index)
        if not 0 <= index < len(self.choices):
            return None
        choice = self.choices[index]
        if choice.finished:
            return None
        tokens = list(result.output_token_ids[0]) if result.output_token_ids else []
        reason = result.finish_reasons[0].name if result.finish_reasons else "NOT_FINISHED"
        if reason == "CANCELLED":
            choice.finished = True
            return SequenceOutput(index=index, token_ids=[], finish=EngineFinish.CANCELLED)

        logprobs = self._logprobs(choice, result, tokens)
        finish = _FINISH_BY_NAME.get(reason)
        stop_token_id: int | None = None
        deferred = self._deferred_stop(choice, tokens)
        if deferred is not None:
            tokens = tokens[: deferred + 1]
            logprobs = logprobs[: deferred + 1] if logprobs is not None else None
            reason = "STOP_WORDS"
        if tokens:
            choice.last_token = tokens[-1]
        if reason == "STOP_WORDS":
            stop = choice.last_token
            if stop is not None and stop in self._stops.eos_ids:
                finish = EngineFinish.EOS
                if tokens:  # the eos token is never handed out, as with end_id
                    tokens = tokens[:-1]
                    logprobs = logprobs[:-1] if logprobs is not None else None
            else:
                finish, stop_token_id = EngineFinish.STOP_TOKEN, stop
        choice.generated += len(tokens)
        if finish is None and not tokens:
            return None
        output = SequenceOutput(
            index=index,
            token_ids=tokens,
            logprobs=logprobs,
            finish=finish,
            stop_token_id=stop_token_id,
        )
        if finish is not None:
            choice.finished = True
            output.cached_tokens = self._cached_tokens(result)
        return output

    def _deferred_stop(self, choice: ChoiceState, tokens: list[int]) -> int | None:
        """Position in `tokens` of the first stop id the adapter applies itself, if any."""
        deferred = self._stops.deferred_stop_ids
        if not deferred:
            return None
        for offset, token in enumerate(tokens):
            # Stops count only once min_tokens tokens exist before them.
            if token in deferred and choice.generated + offset >= self._params.min_tokens:
                return offset
        return None

    def _logprobs(
        self, choice: ChoiceState, result: Any, tokens: list[int]
    ) -> list[TokenLogprob] | None:
        if not self._params.logprobs:
            return None
        beams = result.log_probs or [[]]
        cumulative = list(beams[0])
        start = choice.logprobs_seen
        if len(cumulative) >= start + len(tokens):
            values = cumulative[start : start + len(tokens)]
        else:  # a build that sends only the new log probs
            values = cumulative[-len(tokens) :] if tokens else []
        choice.logprobs_seen = start + len(tokens)
        if len(values) < len(tokens):
            raise RuntimeError(
                f"TensorRT-LLM returned {len(values)} log probs for {len(tokens)} tokens"
            )
        raw = self._raw_logprobs(result, tokens)
        if raw is None:
            return [
                TokenLogprob(token_id=t, logprob=float(v))
                for t, v in zip(tokens, values, strict=True)
            ]
        chosen, tops = raw
        return [
            TokenLogprob(token_id=t, logprob=lp, top=top)
            for t, lp, top in zip(tokens, chosen, tops, strict=True)
        ]

    def _raw_logprobs(
        self, result: Any, tokens: list[int]
    ) -> tuple[list[float], list[tuple[tuple[int, float], ...]]] | None:
        """The chosen tokens' log probs and top lists from the raw generation logits, or None
        when the request has none (no top_logprobs)."""
        k = self._params.top_logprobs
        logits = result.generation_logits
        if k <= 0 or logits is None or not tokens:
            return None
        import torch

        # Streaming: [new tokens, beam, padded vocab]; only beam 0 exists without beam search.
        rows = torch.as_tensor(logits).reshape(-1, logits.shape[-1])
        logprobs = torch.log_softmax(rows[-len(tokens) :, : self._vocab_size].float(), dim=-1)
        chosen = logprobs.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0]
        values, ids = logprobs.topk(k, dim=-1)
        tops = [
            tuple(zip(row_ids, row_values, strict=True))
            for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True)
        ]
        return chosen.tolist(), tops

    def _cached_tokens(self, result: Any) -> int:
        metrics = result.request_perf_metrics
        if metrics is None:
            return 0
        reused = int(metrics.kv_cache_metrics.num_reused_blocks)
        return min(self._prompt_len, reused * self._tokens_per_block)
