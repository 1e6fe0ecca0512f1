"""A grammar compiled for one model's tokenizer, and the per-sequence matchers engines use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from inference.grammar.spec import GrammarSpec

if TYPE_CHECKING:
    import xgrammar

# "Any JSON object". Not xgrammar's builtin JSON grammar (TensorRT-LLM's GuideType kJSON),
# which also allows a top-level array: OpenAI's json_object promises an object.
JSON_OBJECT_SCHEMA = '{"type": "object"}'


@dataclass(frozen=True, slots=True)
class Guide:
    """How TensorRT-LLM's executor is told the grammar (its GuidedDecodingParams): a GuideType
    member name (cpp/include/tensorrt_llm/executor/executor.h, GuidedDecodingParams::GuideType:
    kJSON, kJSON_SCHEMA, kREGEX, kEBNF_GRAMMAR, kSTRUCTURAL_TAG; read at commit 879039f6) and
    the guide string the executor compiles."""

    guide_type: str
    guide: str


class SequenceMatcher:
    """The grammar state of one sequence: which tokens may come next, what came so far."""

    def __init__(self, matcher: xgrammar.GrammarMatcher) -> None:
        self._matcher = matcher

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into row `row` of an `allocate_bitmask` tensor."""
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> bool:
        """Advance past `token_id`; False if the grammar forbids it (the state is unchanged)."""
        return bool(self._matcher.accept_token(token_id))

    @property
    def terminated(self) -> bool:
        """The grammar ended and a stop token was accepted."""
        return bool(self._matcher.is_terminated())


@dataclass(frozen=True, slots=True)
class CompiledConstraint:
    """A `GrammarSpec` compiled for one model's vocabulary; shared by every request using it."""

    spec: GrammarSpec
    grammar: xgrammar.CompiledGrammar = field(repr=False)
    # Width of the logits the bitmask covers (the model's vocabulary, padding included).
    vocab_size: int
    # The same grammar for TensorRT-LLM's executor, which compiles it itself.
    guide: Guide = field(repr=False)

    def new_matcher(self) -> SequenceMatcher:
        """A fresh matcher for one sequence (each of n choices gets its own)."""
        import xgrammar

        return SequenceMatcher(xgrammar.GrammarMatcher(self.grammar))

    def allocate_bitmask(self, rows: int) -> torch.Tensor:
        """An int32 bitmask [rows, ceil(vocab / 32)] for `SequenceMatcher.fill_bitmask`, every
        token allowed until a row is filled."""
        import xgrammar

        return xgrammar.allocate_token_bitmask(rows, self.vocab_size)


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Set the logits of forbidden tokens to -inf in `rows` of `logits` ([B, V]), in place.

    `bitmask` has one row per logits row (only `rows` need be filled): the others, and their
    logits, are not touched, so only constrained rows pay. The bitmask must cover the whole
    logits width (`CompiledConstraint.vocab_size`): xgrammar leaves ids past it unmasked.
    """
    import xgrammar

    xgrammar.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
