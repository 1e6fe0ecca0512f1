"""Engine-facing sampling parameters, already validated and resolved to concrete values."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick each token and when to stop; every engine honours every field.

    The servicer builds this from a `GenerateRequest` after validation, with the model's
    defaults applied, so engines never see unset or out-of-range values.
    """

    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    min_p: float = 0.0  # 0 disables
    seed: int | None = None  # None: fresh randomness per request
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    # Score the prompt too (see SequenceOutput.prompt_logprobs); top_logprobs applies to it.
    prompt_logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def seed_for(self, index: int) -> int | None:
        """Seed of choice `index`: distinct per choice so n > 1 gives n different samples."""
        return None if self.seed is None else self.seed + index
