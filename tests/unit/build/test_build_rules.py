"""trtllm_1_2_1_rules.yaml: each rule fires on the combination its source describes, and target
validation refuses every target that trtllm-build 1.2.1 would refuse or build differently."""

from __future__ import annotations

import dataclasses

import pytest

from enginebuild.build_rules import BuildFacts, apply_rules, load_rules
from enginebuild.targets import Matrix, recipe_problems
from inference.engines.manifest import Precision

FP8_H100 = BuildFacts("FP8", "FP8", 90, "LlamaForCausalLM")
BF16_A100 = BuildFacts(None, None, 80, "Qwen2ForCausalLM")
INT8_KV_A100 = BuildFacts("W8A16", "INT8", 80, "LlamaForCausalLM")
B200 = BuildFacts("FP8", "FP8", 100, "LlamaForCausalLM")

# rule id -> (flags given, facts, what the release does: refused, or {flag: built value}).
CASES: dict[str, tuple[dict[str, str], BuildFacts, object]] = {
    "context-logits-with-draft-tokens": (
        {"--gather_context_logits": "", "--max_draft_len": "4"}, FP8_H100, "RuntimeError"),
    "all-token-logits-with-draft-tokens": (
        {"--gather_all_token_logits": "", "--max_draft_len": "4"}, FP8_H100, "RuntimeError"),
    "multiple-profiles-with-opt-num-tokens": (
        {"--multiple_profiles": "enable", "--opt_num_tokens": "256"}, FP8_H100, "RuntimeError"),
    "sm100-gemm-swiglu-plugin": ({"--gemm_swiglu_plugin": "fp8"}, B200, "NotImplementedError"),
    "sm100-fp8-rowwise-gemm-plugin": (
        {"--fp8_rowwise_gemm_plugin": "auto"}, B200, "NotImplementedError"),
    "sm100-low-latency-gemm-plugin": (
        {"--low_latency_gemm_plugin": "fp8"}, B200, "NotImplementedError"),
    "sm100-low-latency-gemm-swiglu-plugin": (
        {"--low_latency_gemm_swiglu_plugin": "fp8"}, B200, "NotImplementedError"),
    "sm100-bert-context-fmha-fp32-acc": (
        {"--bert_context_fmha_fp32_acc": "enable"}, B200, "NotImplementedError"),
    "streamingllm": ({"--streamingllm": "enable"}, FP8_H100, "AssertionError"),
    "pp-reduce-scatter-not-mixtral": ({"--pp_reduce_scatter": "enable"}, FP8_H100,
                                      "AssertionError"),
    "paged-kv-cache-enable-contradicts-kv-cache-type": (
        {"--paged_kv_cache": "enable", "--kv_cache_type": "continuous"}, FP8_H100,
        "AssertionError"),
    "paged-kv-cache-disable-contradicts-kv-cache-type": (
        {"--paged_kv_cache": "disable", "--kv_cache_type": "paged"}, FP8_H100, "AssertionError"),
    # streamingllm is refused first; its override is what build() alone would do.
    "streamingllm-disables-paged-context-fmha": (
        {"--streamingllm": "enable"}, FP8_H100, "AssertionError"),
    "reduce-fusion-needs-tensor-parallelism": (
        {"--reduce_fusion": "enable"}, FP8_H100, {"--reduce_fusion": "disable"}),
    "reduce-fusion-architectures": (
        {"--reduce_fusion": "enable"}, dataclasses.replace(BF16_A100, tp_size=2),
        {"--reduce_fusion": "disable"}),
    "user-buffer-needs-reduce-fusion": (
        {"--user_buffer": "enable", "--reduce_fusion": "disable"}, FP8_H100,
        {"--user_buffer": "disable"}),
    "norm-quant-fusion-with-reduce-fusion": (
        {"--norm_quant_fusion": "enable", "--reduce_fusion": "enable"},
        dataclasses.replace(FP8_H100, quant_algo="NVFP4", tp_size=2),
        {"--norm_quant_fusion": "disable"}),
    "norm-quant-fusion-architectures": (
        {"--norm_quant_fusion": "enable"}, dataclasses.replace(BF16_A100, quant_algo="NVFP4"),
        {"--norm_quant_fusion": "disable"}),
    "norm-quant-fusion-needs-nvfp4": (
        {"--norm_quant_fusion": "enable"}, FP8_H100, {"--norm_quant_fusion": "disable"}),
    "no-context-fmha": (
        {"--context_fmha": "disable"}, FP8_H100,
        {"--use_fp8_context_fmha": "disable", "--use_paged_context_fmha": "disable"}),
    # The plugin default of use_fp8_context_fmha is enable: a BF16 build turns it off.
    "fp8-context-fmha-needs-fp8-workflow": ({}, BF16_A100, {"--use_fp8_context_fmha": "disable"}),
    "fp8-kv-paged-context-fmha-needs-fp8-workflow": (
        {"--use_fp8_context_fmha": "disable"},
        dataclasses.replace(BF16_A100, kv_cache_quant_algo="FP8"),
        {"--use_paged_context_fmha": "disable"}),
    "fp8-context-fmha-needs-sm89": (
        {"--use_paged_context_fmha": "disable"}, dataclasses.replace(FP8_H100, sm=80),
        {"--use_fp8_context_fmha": "disable"}),
    "fp8-kv-paged-context-fmha-needs-sm89": (
        {}, dataclasses.replace(FP8_H100, sm=86), {"--use_paged_context_fmha": "disable"}),
    "fp8-paged-context-fmha-needs-fp8-kv": (
        {}, dataclasses.replace(FP8_H100, kv_cache_quant_algo=None),
        {"--use_fp8_context_fmha": "disable"}),
    "fp8-kv-paged-context-fmha-forces-fp8-context-fmha": (
        {"--use_fp8_context_fmha": "disable"}, dataclasses.replace(FP8_H100, sm=89),
        {"--use_fp8_context_fmha": "enable"}),
    "int8-kv-disables-paged-context-fmha": (
        {"--use_paged_context_fmha": "enable", "--use_fp8_context_fmha": "disable"},
        INT8_KV_A100, {"--use_paged_context_fmha": "disable"}),
    "sm100-int-weight-only": ({}, dataclasses.replace(B200, quant_algo="W8A16"), "RuntimeError"),
    "sm100-int8-kv": ({}, dataclasses.replace(B200, quant_algo=None, kv_cache_quant_algo="INT8"),
                      "RuntimeError"),
    "gemm-swiglu-needs-fused-mlp": (
        {"--gemm_swiglu_plugin": "fp8", "--use_fused_mlp": "disable"}, FP8_H100, "RuntimeError"),
    "low-latency-gemm-swiglu-needs-fused-mlp": (
        {"--low_latency_gemm_swiglu_plugin": "fp8", "--use_fused_mlp": "disable"}, FP8_H100,
        "RuntimeError"),
}  # fmt: skip


def test_every_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(rule.id for rule in load_rules())


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_as_its_source_says(rule_id: str) -> None:
    given, facts, expected = CASES[rule_id]
    outcome = apply_rules(given, facts)
    if isinstance(expected, str):
        # streamingllm-disables-paged-context-fmha is pre-empted by the streamingllm refusal,
        # as build_model() asserts before build() overrides.
        fired = {r.rule.id for r in outcome.refusals} | {o.rule.id for o in outcome.overrides}
        assert rule_id in fired
        assert {r.rule.refuse for r in outcome.refusals} == {expected}
    else:
        assert {o.flag: o.built for o in outcome.overrides if o.rule.id == rule_id} == expected
        assert outcome.refusals == ()


def test_a_combination_no_rule_covers_builds_as_asked() -> None:
    given = {"--use_fp8_context_fmha": "enable", "--multiple_profiles": "enable"}
    outcome = apply_rules(given, FP8_H100)
    assert outcome.refusals == () and outcome.overrides == ()
    assert outcome.flags["--use_paged_context_fmha"] == "enable"  # the record's default


def test_refusal_message_names_the_value_and_the_source() -> None:
    [refusal] = apply_rules({"--fp8_rowwise_gemm_plugin": "bfloat16"}, B200).refusals
    assert refusal.message == "fp8_rowwise_gemm_plugin=bfloat16 is not supported on SM 100."
    assert refusal.describe().endswith(
        "[plugin.py PluginConfig.validate(); rule sm100-fp8-rowwise-gemm-plugin in "
        "trtllm_1_2_1_rules.yaml]"
    )


@pytest.mark.parametrize("gpu", ["a100-40gb", "a10g"])
def test_int8_kv_with_paged_context_fmha_is_refused(matrix: Matrix, gpu: str) -> None:
    """Issue 13 point 2: the A100-40GB / A10G recipes as they were (INT8 KV cache)."""
    target = matrix.target("mistralai/Mistral-7B-Instruct-v0.3", gpu)
    before = dataclasses.replace(target, precision=Precision(target.precision.weights, "int8"))
    assert recipe_problems(before) == [
        'trtllm-build 1.2.1 builds --use_paged_context_fmha disable, not enable: "Paged Context '
        "FMHA is disabled because it doesn't work with int8 kv cache currently.\" [builder.py "
        "build(); rule int8-kv-disables-paged-context-fmha in trtllm_1_2_1_rules.yaml]"
    ]


@pytest.mark.parametrize("gpu", ["l40s", "l4"])
def test_fp8_context_fmha_disable_on_ada_is_refused(matrix: Matrix, gpu: str) -> None:
    """Issue 13 point 7: --use_fp8_context_fmha disable with FP8 KV is not what builds."""
    target = matrix.target("Qwen/Qwen2.5-Coder-7B-Instruct", gpu)
    before = dataclasses.replace(
        target, flags={**target.flags, "--use_fp8_context_fmha": "disable"}
    )
    [problem] = recipe_problems(before)
    assert problem.startswith(
        'trtllm-build 1.2.1 builds --use_fp8_context_fmha enable, not disable: "FP8 Context '
        'FMHA is enabled to support FP8 Paged Context FMHA."'
    )
