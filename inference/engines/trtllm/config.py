"""What the adapter reads from an engine's config.json and a checkpoint's generation_config.json.

Both are parsed as JSON: importing tensorrt_llm needs libcuda, and these facts are needed
before (and to decide whether) the executor is created.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.engines.base import EngineUnavailableError

log = logging.getLogger(__name__)

# trtllm-build's default paged KV block size (PluginConfig.tokens_per_block).
DEFAULT_TOKENS_PER_BLOCK = 32
# Logits types the executor can bias (an FP32 embedding bias) and grammar-mask; with any other
# the decoder step throws (createNewDecoderRequests.cpp getEmbeddingBias L96-129 at b35ac1b6;
# guidedDecoder.cpp execute L204-219 at 2a9abd95), forwardAsync's catch answers every active
# request with the error (executorImpl.cpp forwardAsync catch L1792-1796,
# terminateActiveRequests L1670-1690, at b35ac1b6), so the adapter refuses such requests first.
BIASABLE_LOGITS_DTYPES = ("float32", "float16")


@dataclass(frozen=True, slots=True)
class EngineBuildConfig:
    """The build-time facts of one engine (config.json `build_config` / `pretrained_config`)."""

    max_input_len: int
    max_seq_len: int
    max_batch_size: int
    max_num_tokens: int
    vocab_size: int
    tokens_per_block: int
    # KV reuse and chunked context both need paged context FMHA compiled in.
    paged_context_fmha: bool
    # Both decide the longest prompt when chunked context is off (`longest_prompt`).
    context_fmha: bool
    remove_input_padding: bool
    version: str | None
    # The engine's "logits" tensor type (pretrained_config.logits_dtype): see
    # BIASABLE_LOGITS_DTYPES.
    logits_dtype: str
    # trtllm-build --gather_context_logits (build_config.gather_context_logits, read by the C++
    # runtime as ModelConfig::computeContextLogits, cpp/tensorrt_llm/runtime/gptJsonConfig.cpp
    # L247 and L267, default false, at b57221b7: an early-2024 version, the newest stored):
    # the executor then runs without KV-cache block reuse (the adapter's _executor_config).
    gather_context_logits: bool = False

    @classmethod
    def read(cls, engine_dir: Path) -> EngineBuildConfig:
        path = engine_dir / "config.json"
        try:
            data = json.loads(path.read_text())
            build = data["build_config"]
            pretrained = data["pretrained_config"]
            plugins: dict[str, Any] = build.get("plugin_config") or {}
            return cls(
                max_input_len=int(build["max_input_len"]),
                max_seq_len=int(build["max_seq_len"]),
                max_batch_size=int(build["max_batch_size"]),
                max_num_tokens=int(build["max_num_tokens"]),
                vocab_size=int(pretrained["vocab_size"]),
                tokens_per_block=int(plugins.get("tokens_per_block", DEFAULT_TOKENS_PER_BLOCK)),
                paged_context_fmha=_enabled(plugins.get("use_paged_context_fmha", True)),
                context_fmha=_enabled(plugins.get("context_fmha", True)),
                remove_input_padding=_enabled(plugins.get("remove_input_padding", True)),
                version=data.get("version"),
                logits_dtype=str(pretrained.get("logits_dtype") or "float32"),
                gather_context_logits=bool(build.get("gather_context_logits", False)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineUnavailableError(f"engine config {path} is unreadable: {exc!r}") from exc


def _enabled(value: object) -> bool:
    # trtllm-build writes plugin flags as booleans; older configs used "enable"/"disable".
    if isinstance(value, str):
        return value.lower() not in ("disable", "false", "0", "")
    return bool(value)


@dataclass(frozen=True, slots=True)
class RuntimeLimits:
    max_batch_size: int
    max_num_tokens: int


def clip_runtime_limits(
    build: EngineBuildConfig, *, max_batch_size: int | None, max_num_tokens: int | None
) -> RuntimeLimits:
    """Runtime limits never above the build's: the executor can lower them, not raise them."""

    def clip(name: str, wanted: int | None, built: int) -> int:
        if wanted is None:
            return built
        if wanted < 1:
            raise ValueError(f"{name} must be >= 1, got {wanted}")
        if wanted > built:
            log.warning(
                "%s=%d is above the engine's build limit %d; using %d (rebuild the engine to "
                "raise it)",
                name,
                wanted,
                built,
                built,
            )
            return built
        return wanted

    return RuntimeLimits(
        max_batch_size=clip("max_batch_size", max_batch_size, build.max_batch_size),
        max_num_tokens=clip("max_num_tokens", max_num_tokens, build.max_num_tokens),
    )


def longest_prompt(
    build: EngineBuildConfig, limits: RuntimeLimits, *, chunked_context: bool
) -> int:
    """The longest prompt the executor accepts; build_config.max_input_len is not it.

    TensorRT-LLM 1.2 (cpp/tensorrt_llm/batch_manager/trtGptModel.h, TrtGptModel constructor,
    L158-185 at commit c8c6df08, maxNumTokens L138-152; LlmRequest::validate refuses longer
    prompts, llmRequest.cpp L259-264 at 119c6e60):
    maxSequenceLen - 1 with chunked context; else min(maxSequenceLen - 1, maxNumTokens) when
    context FMHA and packed input (remove_input_padding) are on; else max_input_len.
    maxNumTokens is the runtime value, which can only lower the build's (`clip_runtime_limits`).
    """
    if chunked_context:
        return build.max_seq_len - 1
    if build.context_fmha and build.remove_input_padding:
        return min(build.max_seq_len - 1, limits.max_num_tokens)
    return build.max_input_len


@dataclass(frozen=True, slots=True)
class GenerationDefaults:
    """End-of-sequence and padding ids from generation_config.json, in the file's order."""

    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @classmethod
    def read(cls, checkpoint_dir: Path) -> GenerationDefaults:
        path = checkpoint_dir / "generation_config.json"
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return cls()
        eos = data.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (eos,) if isinstance(eos, int) else ()
        pad = data.get("pad_token_id")
        return cls(
            eos_token_ids=tuple(int(e) for e in eos_ids),
            pad_token_id=int(pad) if isinstance(pad, int) else None,
        )

    def order(self, eos_token_ids: frozenset[int]) -> list[int]:
        """A request's eos ids, generation_config.json's order first (its first is the end_id)."""
        listed = [e for e in self.eos_token_ids if e in eos_token_ids]
        return listed + sorted(eos_token_ids.difference(listed))
