"""Guided decoding of the fake executor (TensorRT-LLM 1.2.1), enforced with real xgrammar.

What it copies, read through the code index (paths relative to the TensorRT-LLM repository):
- `GuidedDecodingConfig(backend, encoded_vocab=None, tokenizer_str=None, stop_token_ids=None)`
  and `GuidedDecodingParams(guide_type, guide=None)` with GuideType JSON, JSON_SCHEMA, REGEX,
  EBNF_GRAMMAR, STRUCTURAL_TAG (cpp/tensorrt_llm/nanobind/executor/request.cpp L537-542 at
  ac456dca;
  cpp/include/tensorrt_llm/executor/executor.h, GuidedDecodingParams::GuideType L492-510 at
  879039f6). A guide string is required except for JSON
  (cpp/tensorrt_llm/executor/guidedDecodingParams.cpp, constructor L25-31 at 2a9abd95:
  TLLM_CHECK_WITH_INFO(mGuideType ==
  GuideType::kJSON || mGuide.has_value(), ...)).
- The executor's GuidedDecoder (cpp/tensorrt_llm/batch_manager/guidedDecoder.cpp, commit
  2a9abd95, the 1.2-era version with the STRUCTURAL_TAG case and XGRAMMAR_CACHE_LIMIT_GB;
  constructor L32-75, build L77-157, execute L159 on): the C++ runtime refuses the LLGUIDANCE
  backend (L41-42: "LLGuidance is not supported for guided
  decoding in C++ runtime."); the tokenizer info is built from encoded_vocab with the vocab
  type and add_prefix_space detected from tokenizer_str (RAW without it), the padded
  vocabulary size and the config's stop ids; at a request's first context step each sequence
  gets a matcher compiled from its guide: JSON -> the builtin JSON grammar, JSON_SCHEMA ->
  CompileJSONSchema(guide) with xgrammar's defaults, REGEX -> CompileRegex, EBNF_GRAMMAR ->
  CompileGrammar, STRUCTURAL_TAG -> CompileStructuralTag; every generation step accepts the
  last token, then fills the next bitmask, which masks the logits before sampling. Once the
  grammar is complete only the stop ids are allowed, so the sequence ends on end_id (END_ID)
  or on a stop word. Not copied: execute masks only FP32 and FP16 logits and throws
  "Unsupported logits data type." for others (L204-219), which fails every active request.
What the fake decides itself: a guide that fails to compile ends its request with an error
response carrying xgrammar's message (the real executor's handling of that exception was not
read). A request with guided decoding params on an executor without a guided decoding config
gets the real error response (executorImpl.cpp fetchNewRequests L1619-1624 at b35ac1b6).
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the image test loads this fake without torch
    import torch


class GuidedDecodingConfig:
    class GuidedDecodingBackend(enum.Enum):
        XGRAMMAR = 0
        LLGUIDANCE = 1

    def __init__(
        self,
        backend: GuidedDecodingConfig.GuidedDecodingBackend,
        encoded_vocab: list[str] | None = None,
        tokenizer_str: str | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> None:
        if not isinstance(backend, GuidedDecodingConfig.GuidedDecodingBackend):
            raise TypeError("backend must be a GuidedDecodingConfig.GuidedDecodingBackend")
        self.backend = backend
        self.encoded_vocab = encoded_vocab
        self.tokenizer_str = tokenizer_str
        self.stop_token_ids = stop_token_ids


class GuidedDecodingParams:
    class GuideType(enum.Enum):
        JSON = 0
        JSON_SCHEMA = 1
        REGEX = 2
        EBNF_GRAMMAR = 3
        STRUCTURAL_TAG = 4

    def __init__(
        self, guide_type: GuidedDecodingParams.GuideType, guide: str | None = None
    ) -> None:
        if not isinstance(guide_type, GuidedDecodingParams.GuideType):
            raise TypeError("guide_type must be a GuidedDecodingParams.GuideType")
        if guide_type != GuidedDecodingParams.GuideType.JSON and guide is None:
            raise RuntimeError("The guide string must be provided unless using GuideType::kJSON.")
        self.guide_type = guide_type
        self.guide = guide


class FakeGuidedDecoder:
    """The executor's grammar state: one xgrammar compiler, matchers made per sequence."""

    def __init__(self, config: GuidedDecodingConfig, vocab_size_padded: int) -> None:
        import xgrammar

        if config.backend != GuidedDecodingConfig.GuidedDecodingBackend.XGRAMMAR:
            raise RuntimeError("LLGuidance is not supported for guided decoding in C++ runtime.")
        if config.encoded_vocab is None:
            raise RuntimeError("guided decoding needs encoded_vocab")
        vocab_type, add_prefix_space = xgrammar.VocabType.RAW, False
        if config.tokenizer_str is not None:
            metadata = xgrammar.TokenizerInfo._detect_metadata_from_hf(config.tokenizer_str)
            vocab_type = metadata["vocab_type"]
            add_prefix_space = bool(metadata["add_prefix_space"])
        info = xgrammar.TokenizerInfo(
            config.encoded_vocab,
            vocab_type,
            vocab_size=vocab_size_padded,
            stop_token_ids=config.stop_token_ids,
            add_prefix_space=add_prefix_space,
        )
        self.vocab_size = vocab_size_padded
        self._compiler = xgrammar.GrammarCompiler(info)

    def matcher(self, params: GuidedDecodingParams) -> Any:
        """A matcher for one sequence; RuntimeError with xgrammar's message if it fails."""
        import xgrammar

        kind = GuidedDecodingParams.GuideType
        compiler, guide = self._compiler, params.guide or ""  # only JSON has none
        try:
            if params.guide_type == kind.JSON:
                grammar = compiler.compile_builtin_json_grammar()
            elif params.guide_type == kind.JSON_SCHEMA:
                grammar = compiler.compile_json_schema(guide)
            elif params.guide_type == kind.REGEX:
                grammar = compiler.compile_regex(guide)
            elif params.guide_type == kind.EBNF_GRAMMAR:
                grammar = compiler.compile_grammar(guide)
            else:
                grammar = compiler.compile_structural_tag(guide)
        except (RuntimeError, ValueError, json.JSONDecodeError) as error:
            raise RuntimeError(str(error)) from error
        return xgrammar.GrammarMatcher(grammar)

    def allowed(self, matcher: Any) -> torch.Tensor:
        """The bool mask [vocab] of the tokens the matcher allows next."""
        import torch
        import xgrammar

        bitmask = xgrammar.allocate_token_bitmask(1, self.vocab_size)
        matcher.fill_next_token_bitmask(bitmask)
        bits = (bitmask[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        return bits.flatten()[: self.vocab_size].bool()
