"""Guided decoding on the executor: its GuidedDecodingConfig, each request's GuidedDecodingParams.

The executor compiles and enforces grammars itself (cpp/tensorrt_llm/batch_manager/
guidedDecoder.cpp, GuidedDecoder, read at commit 2a9abd95: the constructor L32-75, its
tokenizer info L43-57; build L77-157, compiling at the first context chunk L91-133): it builds
xgrammar's tokenizer info from `encoded_vocab` (vocab type and prefix space detected from
`tokenizer_str`), the engine's padded vocabulary size and `stop_token_ids`, and compiles each
request's guide at its first context step. The service compiles the same grammar first
(`inference.grammar`), so whatever reaches the executor is known to compile, and compile
quickly.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.grammar import CompiledConstraint
    from inference.text.tokenizer import ModelTokenizer


def guided_decoding_config(
    trtllm: ModuleType, tokenizer: ModelTokenizer, stop_token_ids: list[int]
) -> Any:
    """The executor's config, as the LLM API builds it (tensorrt_llm/llmapi/tokenizer.py,
    `_xgrammar_tokenizer_info`, read at commit 89fd9b74, used by tensorrt_llm/llmapi/llm.py
    `_TrtLLM`): every token string by id, the fast tokenizer's JSON, the stop ids. Two
    differences: the vocabulary is laid out by id (as xgrammar's own from_huggingface does)
    rather than as a list sorted by id, which only differs where ids have gaps; and the stop
    ids are all of the model's end-of-sequence ids, not only the tokenizer's eos_token_id, so
    that a complete grammar may end on any of them (the others are the request's stop words).
    """
    vocab = tokenizer.hf.get_vocab()
    encoded_vocab = [""] * (max(vocab.values()) + 1)
    for token, token_id in vocab.items():
        encoded_vocab[token_id] = token
    return trtllm.GuidedDecodingConfig(
        backend=trtllm.GuidedDecodingConfig.GuidedDecodingBackend.XGRAMMAR,
        encoded_vocab=encoded_vocab,
        tokenizer_str=tokenizer.hf.backend_tokenizer.to_str(),
        stop_token_ids=stop_token_ids,
    )


def guided_decoding_params(trtllm: ModuleType, constraint: CompiledConstraint | None) -> Any:
    """The request's GuidedDecodingParams, None when unconstrained."""
    if constraint is None:
        return None
    guide = constraint.guide
    guide_type = getattr(trtllm.GuidedDecodingParams.GuideType, guide.guide_type)
    return trtllm.GuidedDecodingParams(guide_type, guide.guide)
