"""Memory sizing of one target: weight bytes, KV bytes per token and how many tokens fit."""

from __future__ import annotations

from dataclasses import dataclass

from enginebuild.targets import SizingPolicy, Target

GIB = 1024**3
KV_BYTES = {"bf16": 2, "fp8": 1, "int8": 1}
AWQ_GROUP = 128  # quantize.py --awq_block_size: one BF16 scale per 128 weights


@dataclass(frozen=True)
class Sizing:
    weights_bytes: int
    kv_bytes_per_token: int
    kv_budget_bytes: int
    kv_tokens: int
    full_length_sequences: float  # requests of max_seq_len the KV cache holds at once
    typical_sequences: float  # requests of policy.typical_request_tokens it holds at once

    def describe(self) -> str:
        return (
            f"weights {self.weights_bytes / GIB:.1f} GiB, KV {self.kv_bytes_per_token // 1024} KiB"
            f"/token, KV budget {self.kv_budget_bytes / GIB:.1f} GiB = {self.kv_tokens:,} tokens "
            f"({self.full_length_sequences:.0f} full-length requests, "
            f"{self.typical_sequences:.0f} typical)"
        )


def weight_bytes(target: Target) -> int:
    model = target.model
    quantized = model.params - model.unquantized_params
    kept = model.unquantized_params * 2  # ModelOpt leaves embedding and lm_head in BF16
    weights = target.precision.weights
    if weights == "bf16":
        return model.params * 2
    if weights in ("fp8", "int8_wo"):
        return quantized + kept
    if weights == "int4_awq":
        return quantized // 2 + (quantized // AWQ_GROUP) * 2 + kept
    raise ValueError(f"no size rule for {weights} weights")


def kv_bytes_per_token(target: Target) -> int:
    m = target.model
    return 2 * m.num_layers * m.num_kv_heads * m.head_dim * KV_BYTES[target.precision.kv_cache]


def size(target: Target, policy: SizingPolicy) -> Sizing:
    weights = weight_bytes(target)
    per_token = kv_bytes_per_token(target)
    free = target.gpu.memory_mib * 1024**2 - weights - policy.runtime_overhead_gib * GIB
    budget = max(0, int(free * policy.kv_cache_free_fraction))
    tokens = budget // per_token
    return Sizing(
        weights_bytes=weights,
        kv_bytes_per_token=per_token,
        kv_budget_bytes=budget,
        kv_tokens=tokens,
        full_length_sequences=tokens / target.limits.max_seq_len,
        typical_sequences=tokens / policy.typical_request_tokens,
    )


def sizing_problems(target: Target, policy: SizingPolicy) -> list[str]:
    """Why a target's limits do not fit its GPU; empty when they do."""
    s = size(target, policy)
    problems = []
    if s.full_length_sequences < policy.min_full_length_sequences:
        problems.append(
            f"KV cache holds {s.full_length_sequences:.1f} requests of max_seq_len "
            f"{target.limits.max_seq_len}, fewer than {policy.min_full_length_sequences}"
        )
    if s.typical_sequences < target.limits.max_batch_size / 2:
        problems.append(
            f"KV cache holds {s.typical_sequences:.0f} typical requests, under half of "
            f"max_batch_size {target.limits.max_batch_size}"
        )
    return problems
